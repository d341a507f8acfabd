"""Mapper plugins (protocol drivers) and the mapper SDK they are written against."""
