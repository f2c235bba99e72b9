"""Migrations of the sample service's ``sample`` schema."""
