# -*- coding: utf-8 -*-
"""kvm_host_probe's accounts group: the QEMU user, its groups, its home."""

import grp
import pwd

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import stat_path


def gather_accounts(user, groups, getpwnam=pwd.getpwnam, getgrall=grp.getgrall):
    try:
        entry = getpwnam(user)
    except KeyError:
        entry = None
    all_groups = getgrall()
    by_name = {g.gr_name: g for g in all_groups}
    result = {"user": None, "user_groups": [], "groups": {}, "home": None}
    for name in groups:
        g = by_name.get(name)
        result["groups"][name] = (
            None if g is None else {"gid": g.gr_gid, "members": sorted(g.gr_mem)}
        )
    if entry is None:
        return result
    primary = next((g.gr_name for g in all_groups if g.gr_gid == entry.pw_gid), None)
    result["user"] = {
        "name": entry.pw_name,
        "uid": entry.pw_uid,
        "gid": entry.pw_gid,
        "primary_group": primary,
        "home": entry.pw_dir,
        "shell": entry.pw_shell,
    }
    names = {g.gr_name for g in all_groups if user in g.gr_mem}
    if primary is not None:
        names.add(primary)
    result["user_groups"] = sorted(names)
    result["home"] = stat_path(entry.pw_dir)
    return result
