#!/bin/sh
# rpi-image-gen pre-image hook: write genimage.cfg for the boot + root + data layout.
# shellcheck disable=SC2154  # the IGconf_* variables come from rpi-image-gen's environment
set -eu

genimg_in=$2

sed \
    -e "s|<IMAGE_DIR>|$IGconf_image_outputdir|g" \
    -e "s|<IMAGE_NAME>|$IGconf_image_name|g" \
    -e "s|<IMAGE_SUFFIX>|$IGconf_image_suffix|g" \
    -e "s|<FW_SIZE>|$IGconf_image_boot_part_size|g" \
    -e "s|<ROOT_SIZE>|$IGconf_image_root_part_size|g" \
    -e "s|<DATA_SIZE>|$IGconf_image_data_part_size|g" \
    -e "s|<SETUP>|'$(readlink -ef setup.sh)'|g" \
    genimage.cfg.in > "$genimg_in/genimage.cfg"
