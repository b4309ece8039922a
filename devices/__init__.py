"""Hardware drivers behind small async interfaces, with fakes that ship in the package."""
