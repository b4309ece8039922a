"""Running the kiosk in the field: systemd notify and watchdog, journald logs, the runtime state
file, self-test, provisioning and safe updates."""
