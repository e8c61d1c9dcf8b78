#!/usr/bin/python
"""kvm_host_probe: read-only facts about a host's KVM and libvirt state."""

# Ansible module conventions: the documentation strings come before the imports, and os.path is
# used throughout (the code runs on the target's python3, standard library only).
DOCUMENTATION = r"""
---
module: kvm_host_probe
short_description: Gather read-only facts about KVM and libvirt on a host, in one call
description:
  - Reports the CPU vendor and virtualization flags, the state of the kvm kernel modules (loadable
    or built into the kernel, read from C(/sys/module), not C(/proc/modules)), and an actual probe
    of C(/dev/kvm) (C(KVM_GET_API_VERSION) and C(KVM_CREATE_VM) ioctls).
  - Reports the libvirt daemon layout (modular, socket-activated monolithic, classic, none), the
    state of the libvirt systemd units, the daemon defaults file, the daemon version and the
    AppArmor integration points.
  - With C(config), C(accounts), C(packages), C(listen) and C(devices) it also reports the active
    keys of the libvirt configuration files, the oneadmin account and its groups, the installed
    daemon, QEMU and driver tools, the TCP listeners on libvirt's ports, and /dev/net/tun and
    /dev/vhost-net; everything C(kvmprep check) judges, in one call.
  - With C(access) it opens /dev/kvm as I(user) (a child process that drops to the user's uid,
    gid and groups; root only) and reports the libvirt unix sockets and polkit rules; with
    C(identity) the sources libvirt derives its host UUID from.
  - With C(qemu) it reports what decides live migration between hosts (the emulator, its
    version, its machine types (from C(-machine help), which starts no VM), the host CPU and the CPU
    models libvirt found usable, and the libvirt version).
  - With C(domains) it reports the QEMU domains running on the host and the machine type each
    started with, from the status XML libvirt keeps per running domain in
    C(/run/libvirt/qemu) (root only), without connecting to libvirt.
  - What C(kvmprep apply) must know before it changes anything, so that a converged host costs
    no module call per item. With C(installed), which of I(packages) are not installed; with
    C(paths), the owner, group and mode of I(paths); with C(ruby_dir), the directory on Ruby's
    load path that C(load_opennebula_paths.rb) goes to; with C(sasl), whether I(sasl_user) is in
    the SASL database and whether the password last set matches I(sasl_fingerprint); with
    C(blocks), whether each of I(blocks) is in its file as M(ansible.builtin.blockinfile)
    would leave it.
  - With C(one) it reports what OpenNebula's front-end needs on the host (controls USR-003 and
    ONE-00x) - the remotes dir (I(remotes_dir)) with its VERSION, a sha256 digest of its files
    and who owns them, the datastores dir, oneadmin's SSH key, authorized_keys and known_hosts,
    the host's SSH host keys, names and addresses, how the front-end's name I(frontend)
    resolves, and the node runtime the remotes run (Ruby loading C(sqlite3) and
    C(load_opennebula_paths) as I(user), lspci, rsync, xmllint, kvmprep's sudoers file).
  - With C(system) it reports what the hosts of a cluster must share besides QEMU (controls
    SYS-001, FLEET-006, FLEET-007) - whether the clock is synchronised, the cgroup layout, the
    kernel release and the CPU microcode revision.
  - With C(peers) it tests the network and oneadmin's SSH from this host to the other hosts of
    its cluster (controls NET-002 and ONE-008) - a TCP connect to each of I(peers) on each of
    I(ports) (1 s per port, 3 s for all, each peer in its own thread), and C(ssh <peer> true)
    as I(user) in BatchMode to each of I(peers) and to I(frontend), four at a time while the
    rest is gathered (each 6 s at most, all 12 s; they begin once Ruby, sudo and timedatectl
    have answered, 2 s at most). It never writes oneadmin's known_hosts
    (StrictHostKeyChecking=yes, UpdateHostKeys=no) and shares no connection (ControlMaster=no,
    ControlPath=none). Where the configured key exchanges begin with sntrup761x25519, it asks
    for curve25519 first (the same list in another order, a tenth of the CPU).
  - Never changes anything; C(changed) is always false. Missing files and permission errors are
    reported as null/false values, never as a failure; what could not be read is listed in
    C(probe.errors) with the reason (for example permission denied when not run as root).
version_added: "0.1.0"
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  gather:
    description: Which groups of facts to gather.
    type: list
    elements: str
    choices:
      [kvm, libvirt, config, accounts, packages, listen, devices, access, identity, qemu, one,
       names, installed, paths, ruby_dir, sasl, blocks, domains, system, peers]
    default: [kvm, libvirt]
  user:
    description:
      - The account QEMU runs as and OpenNebula uses (for the C(accounts) and C(access) groups).
    type: str
    default: oneadmin
  groups:
    description: Groups whose existence and members the C(accounts) group reports.
    type: list
    elements: str
    default: [kvm, libvirt, libvirtd]
  expect:
    description:
      - What the controller expects (inventory values such as the oneadmin uid); not used on the
        host, returned unchanged as C(expect) so that the judgement uses the same values.
    type: dict
    default: {}
  emulator:
    description:
      - The emulator path of OpenNebula's KVM driver (for the C(qemu) group); when it does not
        run, the distribution's C(qemu-system-<arch>) (or C(qemu-kvm)) is described instead.
    type: str
    default: /usr/bin/qemu-kvm-one
  remotes_dir:
    description: Where the front-end copies OpenNebula's remotes on the host (for C(one)).
    type: str
    default: /var/tmp/one
  frontend:
    description:
      - Name of the OpenNebula front-end, resolved on the host (for C(one)) and the SSH hop
        host -> front-end is tested to (for C(peers)); empty, none.
    type: str
    default: ""
  names:
    description:
      - Names resolved on the host (for C(names)), all within 2 s; for C(kvmprep check), the
        OpenNebula names of the other hosts and the front-end's (control NET-001).
    type: list
    elements: str
    default: []
  peers:
    description:
      - The other hosts of this host's cluster (for C(peers)), by their inventory C(name) and
        the C(address) this host reaches them at (for C(kvmprep check), the name OpenNebula
        knows them by, which its drivers and libvirt connect to; empty, the C(name)). Above 32
        peers nothing is tried and C(peers.skipped) says so.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The peer's name in the report.
        type: str
        required: true
      address:
        description: The name or address connected to.
        type: str
        default: ""
  ports:
    description:
      - TCP ports C(peers) connects to on each peer; for C(kvmprep check), the migration
        listener's (16509 for tcp, 16514 for tls, none for ssh) and the first port of QEMU's
        migration range (qemu.conf C(migration_port_min), 49152 by default).
    type: list
    elements: int
    default: []
  packages:
    description:
      - Package names whose installation C(installed) reports (from the dpkg database, or rpm).
    type: list
    elements: str
    default: []
  paths:
    description: Paths whose owner, group and mode C(paths) reports (symlinks followed).
    type: list
    elements: str
    default: []
  blocks:
    description:
      - Marked blocks whose presence C(blocks) reports, as M(ansible.builtin.blockinfile) writes
        them (I(marker) with C({mark}) standing for BEGIN and END, and I(block) between).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file.
        type: str
        required: true
      marker:
        description: The marker line, with C({mark}).
        type: str
        required: true
      block:
        description: The lines between the markers.
        type: str
        required: true
  sasl_db:
    description: The SASL database C(sasl) looks at.
    type: str
    default: /etc/libvirt/passwd.db
  sasl_user:
    description: The SASL user whose entry C(sasl) looks for.
    type: str
    default: ""
  sasl_fingerprint:
    description:
      - What C(sasl) compares with the fingerprint file next to I(sasl_db) (kvmprep's record
        of the password last set); never returned.
    type: str
    default: ""
notes:
  - Runs C(systemctl is-enabled) and C(systemctl is-active) once each for all present units, and
    C(libvirtd --version) (or C(virtqemud --version)) once.
  - With C(qemu), runs C(<emulator> --version) and C(<emulator> -machine help) at the same time
    (killed after 10 seconds), and reads libvirt's QEMU capabilities cache
    (C(/var/cache/libvirt/qemu/capabilities), root only) instead of asking the daemon.
  - With C(one), runs C(ruby) and C(sudo -n -l) once each as I(user) (killed after 10 and 5
    seconds, while the remotes are hashed) and reads every file of the remotes dir.
  - With C(system), runs C(timedatectl show) while the rest is gathered (or, when it does not
    answer, C(chronyc tracking), then C(ntpq -pn)), each killed after 3 seconds.
  - With C(peers), runs C(runuser -u <user> -- ssh ... <peer> true) once per peer and for
    I(frontend), killed after 6 seconds, with PATH, HOME, USER, LOGNAME and LC_ALL only in the
    environment (no SSH agent of the Ansible connection's).
  - The VM created by the C(KVM_CREATE_VM) probe is an empty kernel object closed immediately.
  - The C(access) probe's child process is killed if it has not answered within 5 seconds and is
    always reaped.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: linux
"""

EXAMPLES = r"""
- name: Probe KVM and libvirt
  kvmprep.kvm.kvm_host_probe:
  register: kvm_probe

- name: KVM must be usable
  ansible.builtin.assert:
    that: kvm_probe.probe.kvm.usable
    fail_msg: "/dev/kvm is not usable: {{ kvm_probe.probe.kvm.dev_kvm.error }}"

- name: Only the libvirt part
  kvmprep.kvm.kvm_host_probe:
    gather: [libvirt]
  register: libvirt_probe
"""

RETURN = r"""
probe:
  description: The gathered facts; only the groups asked for in I(gather) are present.
  returned: always
  type: dict
  contains:
    kvm:
      description: CPU, kernel modules and /dev/kvm.
      returned: when C(kvm) is gathered
      type: dict
      contains:
        cpu_vendor:
          description: C(vendor_id) of /proc/cpuinfo (GenuineIntel, AuthenticAMD...), or null.
          type: str
        vt_flags:
          description: Sorted virtualization flags found (C(vmx), C(svm)); empty when none.
          type: list
          elements: str
        modules:
          description:
            - C(loaded), C(builtin) or C(absent) for C(kvm), C(kvm_intel), C(kvm_amd), and for any
              other C(kvm_*) module present in /sys/module (for example C(kvm_pvm)).
          type: dict
          sample: {"kvm": "builtin", "kvm_intel": "absent", "kvm_amd": "absent"}
        dev_kvm:
          description: State of /dev/kvm.
          type: dict
          sample:
            exists: true
            char_device: true
            mode: "0660"
            owner: root
            group: kvm
            api_version: 12
            create_vm: true
            error: null
        usable:
          description: True when KVM_GET_API_VERSION returned 12 and KVM_CREATE_VM succeeded.
          type: bool
    libvirt:
      description: libvirt daemon layout and configuration entry points.
      returned: when C(libvirt) is gathered
      type: dict
      contains:
        systemd:
          description: Whether systemd is the running init (/run/systemd/system exists).
          type: bool
        units:
          description:
            - For each libvirt unit, C(present) (unit file found), C(enabled) and C(active) as
              printed by systemctl. C(unknown) when systemd is not running or systemctl could not
              be run; C(not-found) when the unit file is absent.
          type: dict
          sample: {"libvirtd.service": {"present": true, "enabled": "enabled", "active": "active"}}
        layout:
          description:
            - C(modular) when virtqemud (socket or service) is enabled or active and
              libvirtd.service is neither; else C(socket) when libvirtd.socket is present and not
              masked (monolithic libvirtd with socket activation, the TCP listener is
              libvirtd-tcp.socket); else C(classic) when libvirtd.service or a libvirtd binary is
              present; else C(none).
          type: str
        defaults_file:
          description: The daemon defaults file found, or null.
          type: str
          sample: /etc/default/libvirtd
        defaults_args:
          description: Unquoted LIBVIRTD_ARGS (libvirtd_opts for libvirt-bin) there, or null.
          type: str
          sample: --timeout 120
        daemon_version:
          description: Version printed by C(libvirtd --version) or C(virtqemud --version).
          type: str
          sample: 9.0.0
        apparmor:
          description: AppArmor state and the libvirt-qemu abstraction's include points.
          type: dict
          sample:
            enabled: true
            parser: true
            abstraction: true
            dropin_dir: false
            local_include: true
            rules:
              - file: /etc/apparmor.d/local/abstractions/libvirt-qemu
                rule: "owner /var/lib/one/datastores/** rwk,"
    config:
      description:
        - For qemu.conf, libvirtd.conf, virtqemud.conf and virtproxyd.conf, C(path), C(exists),
          C(keys) (the settings libvirt reads, the first assignment of each name, as int, str or
          list of str; null when the file cannot be read), C(invalid) (names whose first value
          does not parse, or is a list of anything but strings), C(syntax_error) (the first
          C(line) and C(message) libvirt's parser would stop at, or null) and C(error).
      returned: when C(config) is gathered
      type: dict
      sample:
        qemu.conf:
          path: /etc/libvirt/qemu.conf
          exists: true
          keys: {"dynamic_ownership": 0, "user": "oneadmin"}
          invalid: []
          syntax_error: null
          error: null
    accounts:
      description:
        - C(user) (name, uid, gid, primary group, home, shell; null when absent), C(user_groups)
          (every group the user is in, primary included), C(groups) (gid and members of each of
          I(groups), null when absent) and C(home) (the home directory's owner, group and mode).
      returned: when C(accounts) is gathered
      type: dict
    packages:
      description:
        - C(daemon_version) (libvirtd, else virtqemud), C(qemu_system) (sorted paths of
          qemu-system-* and qemu-kvm found), and the paths of C(qemu_img), C(ruby), C(rsync)
          (null when not found).
      returned: when C(packages) is gathered
      type: dict
    listen:
      description:
        - C(sockets), the TCP sockets in LISTEN state on ports 16509 (tcp) and 16514 (tls), from
          /proc/net/tcp and /proc/net/tcp6, as C(address), C(port), C(family); null with C(error)
          when neither file can be read.
      returned: when C(listen) is gathered
      type: dict
    devices:
      description: Like C(kvm.dev_kvm) without the ioctls, for /dev/net/tun and /dev/vhost-net.
      returned: when C(devices) is gathered
      type: dict
    access:
      description:
        - C(kvm_as_user) (C(user), C(evaluated), C(groups), C(api_version), C(error)) is
          /dev/kvm opened and asked for its API version as I(user); C(evaluated) is false, with
          the reason in C(error), when not run as root (or as I(user)).
        - C(sockets), the libvirt read-write unix sockets (/run/libvirt/libvirt-sock,
          /run/libvirt/virtqemud-sock) with C(exists), C(socket), C(owner), C(group), C(mode).
        - C(polkit), the polkit rules files that mention org.libvirt.unix.manage, as C(file) and
          the C(groups) they test with isInGroup().
      returned: when C(access) is gathered
      type: dict
    identity:
      description:
        - The sources of libvirt's host UUID besides the C(host_uuid) key of the daemon's
          configuration; C(dmi) (the SMBIOS product_uuid files libvirt reads, in its order) and
          C(machine_id), each as C(path), C(value) (stripped, or null) and C(error).
      returned: when C(identity) is gathered
      type: dict
    qemu:
      description:
        - C(emulator) (C(path) used, C(source) C(opennebula) for I(emulator) or C(distribution)
          for C(qemu-system-<arch>), C(resolved) path, C(opennebula_path),
          C(opennebula_present)); all null but the last two when no QEMU is installed.
        - C(version) (C(10.0.13)) and C(package) (the distribution's package version QEMU
          reports, or null); C(source) says where they and the machine types come from,
          C(libvirt) (libvirt's cache of the emulator's capabilities, while libvirt trusts it)
          or C(emulator) (C(--version) and C(-machine help) run at the same time).
        - C(machines), as C(-machine help) lists them (libvirt's cache holds the same list
          but the C(none) machine), with C(types) (in the listed order),
          C(default), C(aliases) (alias to the list of machine types it names; Ubuntu lists q35
          twice) and C(deprecated); null when QEMU could not be run, with the reason in C(error).
        - C(cpu), the first CPU of /proc/cpuinfo (C(vendor), C(model_name), C(family),
          C(model), C(stepping), C(flags)) and C(models), the named CPU models libvirt found
          KVM can run (C(usable), null when unknown, C(source) the cache file, C(error)).
        - C(libvirt_version), as in C(libvirt.daemon_version).
      returned: when C(qemu) is gathered
      type: dict
      sample:
        emulator:
          path: /usr/bin/qemu-kvm-one
          source: opennebula
          resolved: /usr/bin/qemu-system-x86_64
          opennebula_path: /usr/bin/qemu-kvm-one
          opennebula_present: true
        source: libvirt
        version: 7.2.22
        package: Debian 1:7.2+dfsg-7+deb12u18+b3
        machines:
          types: [pc-i440fx-7.2, pc-q35-7.2]
          default: pc-i440fx-7.2
          aliases: {"pc": ["pc-i440fx-7.2"], "q35": ["pc-q35-7.2"]}
          deprecated: []
        error: null
        libvirt_version: 9.0.0
    one:
      description:
        - C(remotes), the remotes dir - C(path), C(exists), C(owner), C(mode), C(version) (its
          VERSION file), C(files) (relative path to sha256, links followed), C(tree) (one
          sha256 over them), C(foreign) (the first paths I(user) does not own) and
          C(foreign_count), C(error).
        - C(datastores), the stat of I(user)'s home C(/datastores).
        - C(ssh), I(user)'s C(public_key), C(authorized_keys) (keys), C(known_hosts)
          (C(patterns), C(key), C(marker)), and the host's C(host_keys), C(names), C(addresses).
        - C(frontend), how I(frontend) resolves (C(addresses), C(loopback), C(error)); null
          without I(frontend).
        - C(runtime), C(ruby) (C(path), C(loads), and C(error), the line where Ruby says why
          it failed), C(tools) (lspci, rsync, xmllint to their path or null), C(sudoers)
          (the stat of /etc/sudoers.d/kvmprep-oneadmin), C(sudoers_package) (of
          /etc/sudoers.d/opennebula-node-kvm, OpenNebula's node package's) and C(sudo), the
          command paths the C(Cmnd_Alias) lines and user specifications of
          /etc/sudoers.d/opennebula* and kvmprep-oneadmin name (C(commands), each C(file),
          C(alias), C(command), C(exists),
          C(elsewhere), where a program of that name is instead), C(files) read (C(path),
          C(error)) and C(list), C(sudo -n -l) run as I(user) (C(ok), null when it could not be
          asked, and C(error), sudo's first line).
        - C(kvmrc), the host's copy of the KVM driver's kvmrc in the remotes dir (C(path),
          C(exists), C(error), C(qemu_protocol), C(libvirt_uri), C(migrate_options)).
      returned: when C(one) is gathered
      type: dict
    names:
      description:
        - Per name of I(names), how it resolves here (getaddrinfo, as ssh and libvirt look it
          up) - C(addresses) in the order returned, C(loopback) (one of them is), C(error)
          (why it does not resolve, or C(no answer within 2 s), since each name is resolved
          in a thread and the probe waits 2 s at most for all of them).
      returned: when C(names) is gathered
      type: dict
    installed:
      description:
        - C(manager) (C(dpkg), C(rpm) or null when neither is there), C(missing) (the names of
          I(packages) that are not installed; all of them when it cannot be told).
      returned: when C(installed) is gathered
      type: dict
    paths:
      description: Per path of I(paths), C(exists), C(owner), C(group), C(mode), C(error).
      returned: when C(paths) is gathered
      type: dict
    ruby_dir:
      description: C(dir) (null when Ruby is missing or has none on its load path) and C(error).
      returned: when C(ruby_dir) is gathered
      type: dict
    sasl:
      description: C(user_present) and C(fingerprint_matches) (booleans).
      returned: when C(sasl) is gathered
      type: dict
    blocks:
      description:
        - Per path of I(blocks), C(present) (the last BEGIN marker comes before the last END
          marker and the lines between them are the block), and the file's C(exists),
          C(owner), C(group), C(mode), C(error).
      returned: when C(blocks) is gathered
      type: dict
    domains:
      description:
        - C(path) (C(/run/libvirt/qemu)), C(exists), C(error) (why it could not be listed) and
          C(running), per status file of a running QEMU domain C(file), C(name), C(vm_id)
          (OpenNebula's VM id when the name is C(one-<id>), else null), C(machine) (the
          machine type it started with), C(state), C(pid) and C(error) (why the file could
          not be read or parsed; the other fields are null then, C(name) from the file name).
      returned: when C(domains) is gathered
      type: dict
      sample:
        path: /run/libvirt/qemu
        exists: true
        error: null
        running:
          - {file: one-12.xml, name: one-12, vm_id: 12, machine: pc-q35-10.0,
             state: running, pid: 2113, error: null}
    system:
      description:
        - C(clock), C(synchronized) (true, false, or null when nothing could tell), C(source)
          (C(timedatectl) where systemd runs, else C(chrony), C(ntpd), or C(kernel), the
          adjtimex(2) flag) and C(detail) (what was asked and said); C(container), the
          container manager the host runs in (C(podman), C(docker), systemd's name), else null.
        - C(cgroup), from /proc/mounts, C(version) (2 when cgroup2 is mounted on
          /sys/fs/cgroup, 1 for a tmpfs of v1 controllers, null when neither), C(layout)
          (C(unified), C(hybrid), C(legacy)), C(fstype) and C(error).
        - C(kernel) with C(release) (uname -r); C(microcode), the revision of the first CPU
          of /proc/cpuinfo (null when the kernel does not say, as in most VMs).
      returned: when C(system) is gathered
      type: dict
      sample:
        clock: {synchronized: true, source: timedatectl, detail: "timedatectl: NTPSynchronized=yes"}
        cgroup: {version: 2, layout: unified, fstype: cgroup2, error: null}
        container: null
        kernel: {release: 6.1.0-41-amd64}
        microcode: "0xf0"
    peers:
      description:
        - C(ports) (I(ports)), C(skipped) (why nothing was tried, as above 32 peers, else null),
          C(ssh_skipped) (why no SSH hop was tried, else null - C(kind) C(user) when I(user)
          does not exist, C(ssh) when no ssh client is installed, C(root) when the probe can
          run nothing as I(user); and C(message)).
        - C(hosts), per peer name, C(address) and C(ports), per port (a string), C(state) -
          C(open), C(refused) (the peer answered, nothing listens), C(timeout) (nothing
          answered within 1 s, or before the group's 3 s - filtered), C(unreachable)
          (EHOSTUNREACH, ENETUNREACH, or a local rule refused to send), C(unresolved) (no
          address, or none within 3 s; the name is looked up once for all ports), or
          C(error) - with the C(address) tried last and the C(error); and C(ssh), the hop as
          I(user) - C(ok), C(rc) (null when it did not end within 6 s or could not start) and
          C(message) (ssh's last line on stderr, as "Host key verification failed.").
        - C(frontend), with I(frontend), C(name), C(address) and C(ssh) as above; else null.
      returned: when C(peers) is gathered
      type: dict
      sample:
        ports: [16509, 49152]
        skipped: null
        ssh_skipped: null
        hosts:
          kvm2:
            address: kvm2.example.org
            ports:
              "16509": {state: open, address: 10.0.0.12, error: null}
              "49152": {state: refused, address: 10.0.0.12, error: Connection refused}
            ssh: {ok: true, rc: 0, message: ""}
        frontend:
          name: one
          address: one
          ssh: {ok: false, rc: 255, message: "Host key verification failed."}
    errors:
      description: 'What could not be read and why ("/etc/libvirt/qemu.conf: Permission denied").'
      returned: always
      type: list
      elements: str
expect:
  description: The I(expect) option, unchanged.
  returned: always
  type: dict
"""

# The facts of each group come from module_utils/kvm_host_probe_<concern>.py (Ansible ships
# them with the module); the apply-only groups (installed, paths, ruby_dir, sasl, blocks) from
# kvm_host_probe_apply, which check never asks for.
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_names import resolve_names
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_access import gather_access
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_accounts import (
    gather_accounts,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_apply import (
    finish_ruby_dir,
    gather_blocks,
    gather_installed,
    gather_paths,
    gather_sasl,
    start_ruby_dir,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    UNSET,
    Starter,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_config import gather_config
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_domains import (
    gather_domains,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_identity import (
    gather_identity,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_kvm import (
    gather_devices,
    gather_kvm,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_libvirt import (
    finish_daemon_version,
    gather_libvirt,
    start_daemon_version,
    start_libvirt,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_listen import gather_listen
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_one import (
    gather_one,
    start_ruby_probe,
    start_sudo_list,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_packages import (
    gather_packages,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_peers import (
    finish_peers,
    start_peers,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_qemu import gather_qemu
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_system import (
    gather_clock,
    gather_system,
    start_clock,
)

ARGUMENT_SPEC = {
    "gather": {
        "type": "list",
        "elements": "str",
        "choices": [
            "kvm",
            "libvirt",
            "config",
            "accounts",
            "packages",
            "listen",
            "devices",
            "access",
            "identity",
            "qemu",
            "one",
            "names",
            "installed",
            "paths",
            "ruby_dir",
            "sasl",
            "blocks",
            "domains",
            "system",
            "peers",
        ],
        "default": ["kvm", "libvirt"],
    },
    "user": {"type": "str", "default": "oneadmin"},
    "groups": {"type": "list", "elements": "str", "default": ["kvm", "libvirt", "libvirtd"]},
    "expect": {"type": "dict", "default": {}},
    "emulator": {"type": "str", "default": "/usr/bin/qemu-kvm-one"},
    "remotes_dir": {"type": "str", "default": "/var/tmp/one"},
    "frontend": {"type": "str", "default": ""},
    "names": {"type": "list", "elements": "str", "default": []},
    "peers": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "name": {"type": "str", "required": True},
            "address": {"type": "str", "default": ""},
        },
    },
    "ports": {"type": "list", "elements": "int", "default": []},
    "packages": {"type": "list", "elements": "str", "default": []},
    "paths": {"type": "list", "elements": "str", "default": []},
    "sasl_db": {"type": "str", "default": "/etc/libvirt/passwd.db"},
    "sasl_user": {"type": "str", "default": ""},
    "sasl_fingerprint": {"type": "str", "default": "", "no_log": True},
    "blocks": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "path": {"type": "str", "required": True},
            "marker": {"type": "str", "required": True},
            "block": {"type": "str", "required": True},
        },
    },
}
GATHER_CHOICES = tuple(ARGUMENT_SPEC["gather"]["choices"])
DEFAULT_GATHER = tuple(ARGUMENT_SPEC["gather"]["default"])


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    gather = module.params["gather"] or []
    errors = []
    probe = {}
    # Ruby is slow to start: it runs while everything else is gathered.
    ruby = start_ruby_probe(module.params["user"]) if "one" in gather else None
    sudo = start_sudo_list(module.params["user"]) if "one" in gather else None
    clock = start_clock() if "system" in gather else None
    ruby_dir = start_ruby_dir() if "ruby_dir" in gather else None
    starter = Starter()
    # Three groups report the daemon version: "libvirtd --version" runs once. It and the
    # systemctl calls of the libvirt group run side by side while the groups below read files;
    # the groups that need them are gathered last.
    version_call = (
        start_daemon_version(module, starter)
        if {"libvirt", "packages", "qemu"} & set(gather)
        else UNSET
    )
    libvirt = start_libvirt(module, starter) if "libvirt" in gather else None
    # The live tests wait on the network: they run while everything else is gathered. The SSH
    # hops load this host and its peers: they wait for the children above, which have deadlines.
    held = (
        ruby and ruby[1],
        sudo and sudo[0],
        getattr(clock, "proc", None),
        *starter.procs,
    )
    peers = (
        start_peers(
            module.params["peers"],
            module.params["ports"],
            module.params["frontend"],
            module.params["user"],
            hold=held,
        )
        if "peers" in gather
        else None
    )
    if "kvm" in gather:
        probe["kvm"] = gather_kvm()
    if "config" in gather:
        probe["config"] = gather_config(errors)
    if "accounts" in gather:
        probe["accounts"] = gather_accounts(module.params["user"], module.params["groups"])
    if "listen" in gather:
        probe["listen"] = gather_listen(errors)
    if "devices" in gather:
        probe["devices"] = gather_devices()
    if "access" in gather:
        probe["access"] = gather_access(module.params["user"], errors)
    if "identity" in gather:
        probe["identity"] = gather_identity()
    if "one" in gather:
        probe["one"] = gather_one(
            module.params["user"],
            module.params["remotes_dir"],
            module.params["frontend"],
            module.run_command,
            ruby,
            sudo,
        )
    if "names" in gather:
        probe["names"] = resolve_names(module.params["names"])
    if "installed" in gather:
        probe["installed"] = gather_installed(module, module.params["packages"])
    if "paths" in gather:
        probe["paths"] = gather_paths(module.params["paths"])
    if "ruby_dir" in gather:
        probe["ruby_dir"] = finish_ruby_dir(ruby_dir)
    if "sasl" in gather:
        probe["sasl"] = gather_sasl(
            module,
            module.params["sasl_db"],
            module.params["sasl_user"],
            module.params["sasl_fingerprint"],
        )
    if "blocks" in gather:
        probe["blocks"] = gather_blocks(module.params["blocks"])
    if "domains" in gather:
        probe["domains"] = gather_domains(errors=errors)
    version = UNSET if version_call is UNSET else finish_daemon_version(module, version_call)
    if "libvirt" in gather:
        probe["libvirt"] = gather_libvirt(module, version, errors, started=libvirt)
    if "packages" in gather:
        probe["packages"] = gather_packages(module, version)
    if "qemu" in gather:
        probe["qemu"] = gather_qemu(version, module.params["emulator"], errors=errors)
    if "system" in gather:
        probe["system"] = gather_system(errors, clock=lambda: gather_clock(started=clock))
    if peers is not None:
        probe["peers"] = finish_peers(peers)
    probe["errors"] = errors
    module.exit_json(changed=False, probe=probe, expect=module.params["expect"] or {})


if __name__ == "__main__":
    main()
