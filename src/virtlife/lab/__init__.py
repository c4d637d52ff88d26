"""The lab: what virtlife needs to run real guests in tests and demos on one machine.

``guest`` builds (and caches) a tiny test guest from Debian packages: a cloud kernel,
a busybox initramfs running the QEMU guest agent, and a small ext4 data disk.
``hostprep`` prepares the local host for real libvirt + QEMU (/dev/kvm access, the
libvirt daemons, the post-copy sysctl). Later the multi-host lab, several libvirtd
"hosts" on this one machine for migration tests, lives here too. Nothing here is
imported by the services; import the submodules directly (this package re-exports
nothing, so importing it stays cheap).
"""
