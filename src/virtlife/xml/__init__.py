"""Domain XML: small models and builders that only turn values into XML and back.

No policy lives here (defaults are chosen by ``services``), and nothing here talks
to libvirt.
"""
