"""tomostream.recon"""
