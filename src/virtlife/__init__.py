"""virtlife: manage the whole life of KVM/QEMU virtual machines on libvirt hosts.

The package is layered: ``cli`` (and later ``api``) call ``services``, which call
``hypervisor`` (the only code that touches libvirt) and ``store`` (SQLite).
Nothing below ``services`` imports upward.
"""

__version__ = "0.1.0"
