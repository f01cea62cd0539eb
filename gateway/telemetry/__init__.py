"""Spans as plain records, a bounded ring buffer, and the drain task that ships them."""
