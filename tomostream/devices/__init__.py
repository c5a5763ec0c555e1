"""tomostream.devices"""
