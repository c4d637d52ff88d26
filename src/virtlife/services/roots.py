"""The allowed roots: where an API operator may name files, on each host.

An operator token may name a file (a disk, kernel, ISO, save file, driver tree) only
under these directories; an admin token anywhere. For a VM host they are:

- the images directory (``config.images_dir()``, ``VIRTLIFE_IMAGES``);
- the extra roots of ``settings.toml``'s ``[paths] allowed_roots``;
- the target directories of the host's directory-like storage pools (types ``dir``,
  ``fs`` and ``netfs``; never a ``disk``, ``logical`` or ``iscsi`` pool, whose target
  is a directory of host block devices such as ``/dev``), asked from the host.

For a file the server itself writes or reads (``windows-drivers-iso``), the roots of
this machine: the first two, and the pools of every host whose URI is this machine.

A path on this machine is resolved with ``realpath`` (its roots too), so ``..`` and
symbolic links cannot lead out; a path on a remote host is normalised only (this
machine cannot see that host's links), which is why a remote root should be a
directory nobody but root links out of. The check itself is ``paths.within_roots``, a
pure function, and so is ``xml.reach.host_reaching``, what in a domain XML reaches
the host (``define_reach`` gives it the roots and the host's emulators), and
``backing.chain_refusal``, whether a disk image's backing chain keeps to the roots
(``services.backing`` reads the chains; ``define_reach``, ``create_reach`` and
``restore_reach``, for the disks of the XML inside a save file, ask it);
this module only gathers the facts. It decides nothing about roles: ``api`` asks it for an
operator's paths and XML only.
"""

from __future__ import annotations

import os.path
from dataclasses import dataclass

from virtlife import config, errors
from virtlife.hypervisor import hostfacts
from virtlife.hypervisor.files import probe_path
from virtlife.hypervisor.host import is_remote
from virtlife.paths import within_roots
from virtlife.services.backing import image_reach
from virtlife.services.fleet import Fleet
from virtlife.xml.domain import DomainSpec, build_domain_xml, parse_domain
from virtlife.xml.reach import Reach, host_reaching

POOL_KINDS = frozenset({"dir", "fs", "netfs"})


@dataclass(frozen=True)
class Roots:
    """The allowed roots of one machine, and how its paths are resolved."""

    where: str  # "on host hv1", "on this machine"
    roots: tuple[str, ...]
    local: bool  # the files are on this machine: resolve links

    def allows(self, path: str) -> bool:
        """Whether ``path`` is an absolute path under a root."""
        try:
            self.check(path, "the path")
        except errors.InvalidInput:
            return False
        return True

    def check(self, path: str, what: str) -> str:
        """``path`` resolved if it lies under a root; ``NotPermitted`` (or
        ``InvalidInput`` for no absolute path) else."""
        resolve = os.path.realpath if self.local else os.path.normpath
        return within_roots(path, self.roots, what, resolve=resolve, where=self.where)


def define_reach(fleet: Fleet, host: str, xml: str, settings: config.Settings
                 ) -> list[Reach]:
    """What in domain ``xml`` reaches ``host`` beyond the allowed roots and its own
    emulators (``xml.reach.host_reaching``), or through a disk image's backing chain
    (``services.backing``); [] when an operator may define it."""
    roots = host_roots(fleet, host, settings)
    return host_reaching(xml, path_allowed=roots.allows,
                         emulators=hostfacts.emulators(fleet.host(host))
                         ) + image_reach(fleet, host, xml, roots.allows)


def create_reach(fleet: Fleet, host: str, spec: DomainSpec, roots: Roots) -> list[Reach]:
    """What the disk images of ``spec`` (whose paths ``roots`` allows) reach on
    ``host`` through their backing chains; [] when an operator may create it."""
    return image_reach(fleet, host, build_domain_xml(spec), roots.allows)


def restore_reach(fleet: Fleet, host: str, path: str, settings: config.Settings
                  ) -> list[Reach]:
    """What the domain XML inside save file ``path`` on ``host`` reaches beyond what an
    operator may define (``define_reach``: host devices, files outside the allowed
    roots, backing chains...) and beyond what the VM of that UUID, defined on ``host``
    now, reaches already. A save file is written by whoever could write the file (a
    guest into its own raw disk among them), so its XML is held to define's rules; but
    an operator may restore a VM an admin made with files elsewhere, as long as the
    save image asks for nothing more than the VM's own definition has. [] when the file
    holds no save image: the restore itself then says what is wrong."""
    xml = probe_path(fleet.host(host), path).save_xml
    if not xml:
        return []
    found = define_reach(fleet, host, xml, settings)
    if not found:
        return []
    uuid = parse_domain(xml).findtext("uuid")
    defined = fleet.host(host).find_uuid(uuid) if uuid else None
    if defined is None:
        return found
    already = set(define_reach(fleet, host, defined.xml(inactive=True, secure=True),
                               settings))
    return [r for r in found if r not in already]


def configured(settings: config.Settings) -> list[str]:
    """The roots every machine has: the images directory and the settings' extra ones."""
    return [str(config.images_dir()), *settings.allowed_roots]


def pool_dirs(fleet: Fleet, host: str) -> list[str]:
    """The directories of ``host``'s directory-like storage pools."""
    pools = hostfacts.pools(fleet.host(host))
    return [p.path for p in pools if p.kind in POOL_KINDS and p.path.startswith("/")]


def host_roots(fleet: Fleet, host: str, settings: config.Settings) -> Roots:
    """The allowed roots for files on VM host ``host`` (asked from it)."""
    uri = fleet.ref(host).uri
    return Roots(f"on host {host}", (*configured(settings), *pool_dirs(fleet, host)),
                 local=not is_remote(uri))


def machine_roots(fleet: Fleet, settings: config.Settings) -> Roots:
    """The allowed roots for files on this machine (the server's own): the pools of the
    hosts that are this machine count; one that does not answer adds none."""
    dirs: list[str] = []
    for name, ref in sorted(fleet.refs.items()):
        if not is_remote(ref.uri):
            try:
                dirs.extend(pool_dirs(fleet, name))
            except errors.HostUnreachable:
                continue
    return Roots("on this machine", (*configured(settings), *dirs), local=True)
