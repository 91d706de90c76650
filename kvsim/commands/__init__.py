"""CLI command implementations (thin: parse, load specs, call one library function, render)."""
