"""Kiosk firmware: a headless asyncio daemon for unattended wallet-payment terminals."""

__version__ = "0.1.0"
