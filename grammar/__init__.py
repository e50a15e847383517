"""The .pde grammar, shipped as package data (pde2net.grammar)."""
