"""`kiosk` subcommands, one module each, listed in kiosk.cli.COMMAND_MODULES."""
