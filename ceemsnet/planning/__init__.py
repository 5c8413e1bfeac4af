"""Which object and hook each function gets: the catalogue of committed
objects, kernel versions and signatures, the hook-family plan, the struct
layouts shared with the C side, and select-and-load (the family fallback)."""
