"""The lab: what virtlife needs to run real guests in tests and demos on one machine.

``guest`` builds (and caches) a tiny test guest from Debian packages: a cloud kernel,
a busybox initramfs running the QEMU guest agent, and a small ext4 data disk.
``hostprep`` prepares the local host for real libvirt + QEMU (/dev/kvm access, the
libvirt daemons, the post-copy sysctl). ``privhost`` starts and stops a private
libvirtd "host" in a mount namespace of its own (its own /etc/libvirt, /var/lib/libvirt
and /run, reached through a socket). ``cluster`` is the multi-host lab: N such hosts,
each in a network namespace of its own (``labnet``: bridge, veths, addresses), reached
over TCP and sharing a pool directory, for migrations; ``light`` is many cheap hosts
for fleet-scale listings. ``common`` holds what they all do the same way (the state
directory's lock, records, probes, virsh). Nothing here is imported by the
services; import the submodules directly (this package re-exports
nothing, so importing it stays cheap).
"""
