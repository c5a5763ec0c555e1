"""tomostream.sim"""
