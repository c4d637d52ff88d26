"""The lab: what virtlife needs to run real guests in tests and demos on one machine.

``guest`` builds (and caches) a tiny test guest from Debian packages: a cloud kernel,
a busybox initramfs running the QEMU guest agent, and a small ext4 data disk.
``hostprep`` prepares the local host for real libvirt + QEMU (/dev/kvm access, the
libvirt daemons, the post-copy sysctl). ``privhost`` starts and stops a private
libvirtd "host" in a mount namespace of its own (its own /etc/libvirt, /var/lib/libvirt
and /run, reached through a socket). Later the multi-host lab, several such hosts on
this one machine for migration tests, lives here too. Nothing here is
imported by the services; import the submodules directly (this package re-exports
nothing, so importing it stays cheap).
"""
