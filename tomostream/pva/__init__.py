"""tomostream.pva"""
