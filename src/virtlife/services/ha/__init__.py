"""High availability (issue 19): the pure decisions (``machine``) and the simulator that
runs them against in-memory hosts, fencers and a store (``script``, ``sim``). Nothing in
this package imports libvirt or the store; the supervisor and the fencer process wire
them to the real ones."""
