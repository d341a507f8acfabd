"""Bundled profiles, shipped as package data: ``kubeedge profiles`` lists them."""
