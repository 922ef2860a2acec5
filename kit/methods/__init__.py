"""Explanation methods: the CAM family and D-RISE behind one Method protocol, in one registry."""
