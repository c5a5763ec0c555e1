"""tomostream.plans"""
