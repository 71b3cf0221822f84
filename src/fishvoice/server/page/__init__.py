"""The page at /: plain HTML, JavaScript and CSS in static/, shipped as package data."""
