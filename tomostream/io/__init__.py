"""tomostream.io"""
