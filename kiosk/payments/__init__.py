"""Wallet payment providers behind one interface (see base.py)."""
