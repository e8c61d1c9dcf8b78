"""The control catalog: what each control enforces, how it is detected and how it is fixed.

IDs are stable (DESIGN.md); only the controls implemented so far are registered here.
"""

from __future__ import annotations

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls import (
    access,
    accounts,
    apparmor,
    drivers,
    fleet,
    kvm,
    libvirt,
    names,
    opennebula,
    packages,
    peers,
    smoke,
    system,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Control,
    Role,
    Severity,
)

BOTH = (Role.KVM_HOST, Role.FRONTEND)

CATALOG: tuple[Control, ...] = (
    Control(
        id="KVM-001",
        title="CPU virtualization extensions",
        severity=Severity.HIGH,
        rationale="CPU with VT extensions (Intel VT-x or AMD-V)",
        detection="vmx/svm in /proc/cpuinfo, and KVM_GET_API_VERSION + KVM_CREATE_VM on "
        "/dev/kvm; no flag but a working /dev/kvm (nested or paravirtual) is a WARN",
        remediation="enable virtualization in the firmware (or nested virtualization on the "
        "parent hypervisor); apply loads kvm_intel/kvm_amd and fails while /dev/kvm is unusable",
        judge=kvm.cpu_extensions,
    ),
    Control(
        id="KVM-002",
        title="kvm kernel modules",
        severity=Severity.HIGH,
        rationale="kvm modules kvm.ko and kvm-intel.ko or kvm-amd.ko loaded",
        detection="/sys/module/kvm and a vendor backend /sys/module/kvm_* (loaded or built in; "
        "not /proc/modules, absent on monolithic kernels)",
        remediation="apply runs `modprobe kvm_intel` (vmx) or `modprobe kvm_amd` (svm)",
        judge=kvm.kvm_modules,
    ),
    Control(
        id="KVM-003",
        title="/dev/kvm device group and mode",
        severity=Severity.HIGH,
        rationale="QEMU runs as oneadmin (a member of kvm) and must open /dev/kvm",
        detection="stat /dev/kvm: a character device, group kvm_host_kvm_device_group (kvm), "
        "mode kvm_host_kvm_device_mode (0660)",
        remediation="apply installs /etc/udev/rules.d/65-kvmprep-kvm.rules "
        '(KERNEL=="kvm", GROUP="kvm", MODE="0660") and sets the group and mode of /dev/kvm now',
        judge=kvm.dev_kvm,
    ),
    Control(
        id="KVM-004",
        title="/dev/kvm usable by the QEMU user",
        severity=Severity.HIGH,
        rationale="QEMU runs as oneadmin (user = oneadmin in qemu.conf) and must open /dev/kvm",
        detection="as root, a child process drops to oneadmin's uid, gid and supplementary "
        "groups, opens /dev/kvm and asks KVM_GET_API_VERSION (12), reporting through a pipe "
        "(killed after 5 s); not root and not oneadmin: ERROR (needs root)",
        remediation="apply installs /etc/udev/rules.d/65-kvmprep-kvm.rules "
        '(KERNEL=="kvm", GROUP="kvm", MODE="0660"), sets the group and mode of /dev/kvm now and '
        "adds oneadmin to kvm (`usermod -aG kvm oneadmin`)",
        judge=kvm.dev_kvm_for_user,
    ),
    Control(
        id="KVM-005",
        title="network devices for VMs",
        severity=Severity.MEDIUM,
        rationale="VMs get their NICs from tap devices, accelerated by vhost-net",
        detection="/dev/net/tun is a character device (FAIL if not); /dev/vhost-net too (WARN)",
        remediation="load the tun and vhost_net modules (`modprobe tun vhost_net`) and list "
        "them in /etc/modules-load.d/; in a container pass the devices through",
        judge=kvm.net_devices,
    ),
    Control(
        id="PKG-001",
        title="libvirt daemon version",
        severity=Severity.HIGH,
        rationale="libvirt >= 0.4.0; libvirt 0.8.7 is known to break the KVM driver",
        detection="`libvirtd --version` (else `virtqemud --version`)",
        remediation="apply installs the distribution's libvirt (libvirt-daemon-system, "
        "libvirt-daemon-driver-qemu, libvirt-clients on Debian); replace a 0.8.7 release",
        judge=packages.libvirt_version,
    ),
    Control(
        id="PKG-002",
        title="QEMU, qemu-img and driver tools",
        severity=Severity.HIGH,
        rationale="qemu tools; the OpenNebula driver remotes are Ruby scripts copied with rsync",
        detection="qemu-system-* (or qemu-kvm), qemu-img, ruby and rsync in PATH, /usr/sbin, "
        "/usr/bin, /sbin, /bin, /usr/libexec",
        remediation="apply installs qemu-system-<arch>, qemu-utils, ruby and rsync (Debian "
        "names; RHEL names from vars/RedHat.yml)",
        judge=packages.qemu_and_tools,
    ),
    Control(
        id="LV-001",
        title="qemu.conf dynamic_ownership = 0",
        severity=Severity.HIGH,
        rationale="dynamic_ownership = 0: OpenNebula owns the images, QEMU must not chown them",
        detection="the active dynamic_ownership key of /etc/libvirt/qemu.conf (unset means 1), "
        "and the keys of kvm_host_qemu_conf_extra, compared by the judge apply's plan asks "
        "(module_utils/kvm_host_judge.py, config)",
        remediation="apply sets `dynamic_ownership = 0` (and kvm_host_qemu_conf_extra) in "
        "/etc/libvirt/qemu.conf (key-level edit with a backup) and restarts libvirt",
        judge=libvirt.dynamic_ownership,
    ),
    Control(
        id="LV-002",
        title="qemu.conf user and group = oneadmin",
        severity=Severity.HIGH,
        rationale="user = oneadmin, group = oneadmin in qemu.conf",
        detection="the active user and group keys of /etc/libvirt/qemu.conf",
        remediation='apply sets `user = "oneadmin"` and `group = "oneadmin"` in '
        "/etc/libvirt/qemu.conf and restarts libvirt",
        judge=libvirt.qemu_user,
    ),
    Control(
        id="LV-003",
        title="libvirt daemon enabled and running",
        severity=Severity.HIGH,
        rationale="the libvirt daemon runs QEMU for OpenNebula, after every boot",
        detection="systemctl is-enabled/is-active of the libvirt units; layout socket "
        "(libvirtd.socket, libvirtd-ro.socket), classic (libvirtd.service) or modular "
        "(virtqemud.socket); virtqemud and libvirtd both on is a FAIL. Under socket activation "
        "an idle libvirtd.service may be inactive (--timeout)",
        remediation="apply enables and starts the layout's units (`systemctl enable --now "
        "libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket` for socket activation); "
        "for a mix, disable the layout you do not use",
        judge=libvirt.daemon_layout,
    ),
    Control(
        id="LV-004",
        title="oneadmin can use qemu:///system",
        severity=Severity.HIGH,
        rationale="oneadmin in the libvirtd group: the drivers run virsh as oneadmin",
        detection="owner, group and mode of /run/libvirt/libvirt-sock (virtqemud-sock when "
        "modular): world read-write, or a group of oneadmin with rw; then unix_sock_group, "
        "unix_sock_rw_perms and auth_unix_rw of libvirtd.conf (virtqemud.conf) as apply sets "
        'them (auth_unix_rw "none": no polkit rule needed); access that works otherwise (polkit, '
        "the default) FAILs: apply would change it and restart libvirt",
        remediation='apply sets unix_sock_group = "libvirt", unix_sock_rw_perms = "0770", '
        'auth_unix_rw = "none" in libvirtd.conf (virtqemud.conf when modular), writes '
        "/etc/systemd/system/libvirtd.socket.d/kvmprep.conf (virtqemud.socket.d when modular: "
        "SocketGroup=libvirt, SocketMode=0660), adds oneadmin to libvirt and restarts libvirt",
        judge=access.qemu_system_access,
    ),
    Control(
        id="LV-005",
        title="migration listener",
        severity=Severity.HIGH,
        rationale="listen_tcp = 1 and libvirtd -l: hosts accept live migrations",
        detection="for kvm_host_migration_transport tcp (tls): libvirtd-tcp.socket "
        "(virtproxyd-tcp.socket when modular) enabled and active, or listen_tcp = 1 and "
        "--listen for the classic daemon; the listener's keys (auth_tcp, auth_tls, "
        "tls_allowed_dn_list, listen_*) as apply writes them; AND a TCP socket in LISTEN on "
        "16509 (16514) in /proc/net/tcp{,6}. With transport ssh: a listener apply would close",
        remediation="apply enables and starts libvirtd-tcp.socket (socket activation), or sets "
        "listen_tcp = 1 in libvirtd.conf and --listen in /etc/default/libvirtd (classic)",
        judge=libvirt.listener,
    ),
    Control(
        id="LV-006",
        title="no unauthenticated TCP listener",
        severity=Severity.CRITICAL,
        rationale="the seed's listen_tcp exposes libvirt; it must not be open without auth",
        detection='auth_tcp = "none" in libvirtd.conf (virtproxyd.conf when modular) while a '
        "TCP socket listens on 16509 on a non-loopback address",
        remediation='apply sets auth_tcp = "sasl" and a SASL user (kvm_host_libvirt_tcp_auth); '
        "or set kvm_host_migration_transport: tls or ssh",
        judge=libvirt.unauthenticated_tcp,
    ),
    Control(
        id="LV-007",
        title="no --listen with socket activation",
        severity=Severity.HIGH,
        rationale="libvirtd -l is for the classic daemon; a socket-activated libvirtd refuses it",
        detection="LIBVIRTD_ARGS in /etc/default/libvirtd (libvirtd_opts in libvirt-bin, "
        "/etc/sysconfig/libvirtd) when the layout is socket activation",
        remediation="apply removes --listen/-l from LIBVIRTD_ARGS (the listener is "
        "libvirtd-tcp.socket) and restarts libvirt",
        judge=libvirt.listen_with_socket_activation,
    ),
    Control(
        id="LV-008",
        title="libvirt config files parse",
        severity=Severity.HIGH,
        rationale="the seed's qemu.conf and libvirtd.conf edits must leave files libvirt loads",
        detection="qemu.conf, libvirtd.conf, virtqemud.conf, virtproxyd.conf scanned with "
        "libvirt's grammar (key = value; int, quoted string or [list]; # comments): the first "
        "unbalanced quote or bracket, or line that is not key = value, with file and line",
        remediation="fix the named line by hand (apply edits only the keys it manages and keeps "
        "a backup of each file it changes); then restart libvirt",
        judge=libvirt.config_syntax,
    ),
    Control(
        id="USR-001",
        title="oneadmin account",
        severity=Severity.HIGH,
        rationale="user/group oneadmin, the same uid/gid on every host (shared datastores)",
        detection="getpwnam(oneadmin): uid/gid kvm_host_oneadmin_uid/gid (9869), home "
        "kvm_host_oneadmin_home (/var/lib/one) existing and owned by oneadmin",
        remediation="apply creates group oneadmin (gid 9869) and user oneadmin (uid 9869, home "
        "/var/lib/one, mode 0750); an existing account with other ids must be renumbered by hand",
        judge=accounts.oneadmin_account,
    ),
    Control(
        id="USR-002",
        title="oneadmin in the kvm and libvirt groups",
        severity=Severity.HIGH,
        rationale="oneadmin in the libvirtd and kvm groups",
        detection="the groups of oneadmin (primary and supplementary) include kvm and the "
        "distribution's libvirt group (libvirt or libvirtd, or kvm_host_libvirt_group)",
        remediation="apply adds oneadmin to the groups (`usermod -aG kvm,libvirt oneadmin`)",
        judge=accounts.oneadmin_groups,
    ),
    Control(
        id="AA-001",
        title="AppArmor datastore rule",
        severity=Severity.MEDIUM,
        rationale="apparmor: `owner /var/lib/one/** rw,` for libvirt-qemu, narrowed to the "
        "datastores as OpenNebula documents it (`/var/lib/one/datastores/** rwk,`): the whole "
        "home would give every VM's QEMU oneadmin's SASL password, TLS client key and SSH keys",
        detection="only where AppArmor is enabled and the libvirt-qemu abstraction exists: an "
        "`owner <datastores>/** rwk,` rule in it, its local include or its .d drop-ins (FAIL "
        "without one); a rule over a directory above the datastores WARNs",
        remediation="apply writes the rule to abstractions/libvirt-qemu.d/kvmprep-oneadmin"
        " (Debian 13) or local/abstractions/libvirt-qemu (Debian 12), checked by apparmor_parser",
        judge=apparmor.datastore_rule,
    ),
    Control(
        id="USR-003",
        title="front-end's oneadmin reaches the host over SSH",
        severity=Severity.HIGH,
        rationale="the front-end runs the drivers on the host as oneadmin over SSH (passwordless, "
        "no host key prompt)",
        detection="the front-end's oneadmin public key (one_frontend_probe) among the host's "
        "oneadmin authorized_keys, and one of the host's SSH host keys in the front-end's "
        "oneadmin known_hosts under the name OpenNebula uses (one_frontend_host_name, else the "
        "inventory name; hashed entries too); a different key under that name is stale. "
        "Without a frontend group: SKIP",
        remediation="kvmprep apply with the frontend group: the front-end's key is authorized "
        "on the host, the host keys are added to the front-end's known_hosts",
        fleet_judge=opennebula.frontend_trust,
        sees_frontend=True,
    ),
    Control(
        id="ONE-001",
        title="driver remotes at the front-end's version",
        severity=Severity.HIGH,
        rationale="OpenNebula copies its remotes (drivers, probes) to the host and runs them "
        "there (`onehost sync`)",
        detection="kvm_host_remotes_dir (/var/tmp/one) on the host against the front-end's "
        "remotes dir and SCRIPTS_REMOTE_DIR: same VERSION and the sha256 of every file of the "
        "front-end's (links followed, as rsync -L copies them); files only the host has are "
        "reported, not failed. Without a frontend group: SKIP (nothing to compare with; the "
        "remotes arrive when the front-end registers the host)",
        remediation="kvmprep apply copies the front-end's remotes to the host as oneadmin "
        "(rsync --delete --checksum) when they differ",
        fleet_judge=opennebula.remotes,
        sees_frontend=True,
    ),
    Control(
        id="ONE-002",
        title="host registered in OpenNebula and monitored",
        severity=Severity.HIGH,
        rationale="register the host with the front-end (onehost create -i kvm -v kvm)",
        detection="one XML-RPC read of oned's host pool per run, from the controller "
        "(one_frontend_host state=query; endpoint and credentials as the role resolves them, "
        "never logged): the host by its OpenNebula name, IM_MAD and VM_MAD kvm, in "
        "one_frontend_cluster, state MONITORED; DISABLED/OFFLINE WARN, INIT WARN, ERROR FAIL "
        "with oned's message; an unreachable API is an ERROR. Without a frontend group: SKIP",
        remediation="kvmprep apply registers the host (one.host.allocate) and waits until it "
        "is monitored; a host with other drivers or in another cluster is fixed with "
        "one_frontend_fix_mismatch: true",
        fleet_judge=opennebula.registered,
        sees_frontend=True,
    ),
    Control(
        id="ONE-003",
        title="front-end: kvm drivers enabled",
        severity=Severity.HIGH,
        rationale="oned.conf: IM_MAD im_kvm and VM_MAD vmm_kvm (today: kvm, IM_MAD in "
        "monitord.conf)",
        detection="on the front-end (one_frontend_probe): the version (remotes VERSION) and "
        "monitord.conf decide the syntax like the role: 3.x IM_MAD name=im_kvm and VM_MAD "
        "name=vmm_kvm in oned.conf; 4.x to 5.10 both NAME=kvm in oned.conf; 5.12 and later "
        "IM_MAD NAME=kvm in monitord.conf, VM_MAD NAME=kvm in oned.conf (parsed, commented "
        "sections do not count)",
        remediation="kvmprep apply enables the sections in that syntax (structural edit with a "
        "backup) and says when oned must be restarted (one_frontend_restart_oned: true)",
        judge=opennebula.frontend_drivers,
        applies_to=(Role.FRONTEND,),
    ),
    Control(
        id="ONE-004",
        title="node runtime the remotes need",
        severity=Severity.HIGH,
        rationale="the remotes run Ruby probes and driver scripts on the host as oneadmin",
        detection="as oneadmin, `ruby -e \"require 'sqlite3'; require "
        "'load_opennebula_paths'\"` succeeds; lspci, rsync and xmllint in PATH; "
        "/etc/sudoers.d/kvmprep-oneadmin present, root 0440 (with kvm_host_one_node_install: "
        "package, the node package's /etc/sudoers.d/opennebula-node-kvm instead)",
        remediation="kvmprep apply installs ruby, ruby-sqlite3, pciutils, rsync, "
        "libxml2-utils, its load_opennebula_paths.rb and its sudoers file (visudo-checked); "
        "in package mode OpenNebula's opennebula-node-kvm brings the last two",
        judge=opennebula.node_runtime,
    ),
    Control(
        id="ONE-005",
        title="emulator path of the KVM driver resolves",
        severity=Severity.HIGH,
        rationale="the KVM driver starts QEMU as /usr/bin/qemu-kvm-one unless vmm_exec_kvm.conf "
        "sets EMULATOR",
        detection="kvm_host_emulator_link (/usr/bin/qemu-kvm-one) resolves to a runnable file "
        "(kvm_host_probe qemu.emulator); the front-end's EMULATOR, when it names another path, "
        "is a WARN",
        remediation="kvmprep apply links the path to the distribution's qemu-system-<arch>",
        fleet_judge=opennebula.emulator,
        sees_frontend=True,
    ),
    Control(
        id="ONE-006",
        title="oneadmin SSH in all four directions; front-end name resolves",
        severity=Severity.HIGH,
        rationale="the drivers use SSH as oneadmin front-end -> host, host -> host (migration, "
        "transfer), host -> front-end (images) and front-end -> front-end; the hosts reach the "
        "front-end by its name",
        detection="judged from the collected keys, without connecting: for each ordered pair "
        "the source's oneadmin key in the target's authorized_keys and a target host key in the "
        "source's known_hosts under the name used (inventory or OpenNebula name); and on each "
        "host the front-end's inventory name resolves (getaddrinfo) to no loopback address. "
        "Each missing pair is named. Without a frontend group: SKIP",
        remediation="kvmprep apply with the frontend group exchanges the keys and host keys "
        "among all machines; fix /etc/hosts or DNS where the front-end's name is loopback",
        fleet_judge=opennebula.ssh_trust,
        applies_to=BOTH,
    ),
    Control(
        id="ONE-007",
        title="datastores and remotes dirs belong to oneadmin",
        severity=Severity.HIGH,
        rationale="the front-end writes to the datastores and updates the remotes as oneadmin",
        detection="<oneadmin home>/datastores and kvm_host_remotes_dir exist and are "
        "oneadmin's, and so is every path in the remotes dir",
        remediation="kvmprep apply creates them and gives a root-owned remotes dir back to "
        "oneadmin (recursively)",
        judge=opennebula.directories,
    ),
    Control(
        id="ONE-011",
        title="oned runs with the configuration on disk",
        severity=Severity.HIGH,
        rationale="oned.conf: the kvm drivers and vmm_exec_kvm.conf's defaults (OS MACHINE for "
        "live migration) take effect when oned reads them, which it does at start only",
        detection="on the front-end (one_frontend_probe): the oned process in /proc and its "
        "start time (/proc/PID/stat starttime / SC_CLK_TCK + btime of /proc/stat) against the "
        "mtimes of oned.conf, monitord.conf and vmm_exec/vmm_exec_kvm.conf (2 s of slack for "
        "whole-second clocks); a file changed after the start FAILs with both times; oned not "
        "running FAILs",
        remediation="restart OpenNebula (systemctl restart opennebula), or kvmprep apply with "
        "one_frontend_restart_oned=true",
        judge=opennebula.oned_loaded,
        applies_to=(Role.FRONTEND,),
    ),
    Control(
        id="FLEET-001",
        title="libvirt host UUID unique across hosts",
        severity=Severity.HIGH,
        rationale="hosts accept live migrations from each other (libvirt -l)",
        detection="per host, libvirt's rule: host_uuid in libvirtd.conf (virtqemud.conf when "
        'modular); else host_uuid_source = "machine-id": /etc/machine-id; else the SMBIOS '
        "product_uuid (/sys/devices/virtual/dmi/id, /sys/class/dmi/id); none: random at each "
        "start. Hosts sharing one FAIL, naming each other",
        remediation="manual (apply does not change it): set a distinct host_uuid, or "
        'host_uuid_source = "machine-id" when cloned firmware repeats the SMBIOS UUID, in '
        "libvirtd.conf (virtqemud.conf) and restart libvirt",
        fleet_judge=fleet.unique_host_uuid,
    ),
    Control(
        id="FLEET-002",
        title="oneadmin uid/gid identical across hosts and front-end",
        severity=Severity.HIGH,
        rationale="user/group oneadmin, the same uid/gid on every host (shared datastores)",
        detection="uid and gid of oneadmin on every evaluated host and the front-end; the "
        "machines that differ from "
        "the value most hosts have (a tie goes to kvm_host_oneadmin_uid/gid) FAIL",
        remediation="apply creates oneadmin with kvm_host_oneadmin_uid/gid (9869) on new hosts; "
        "an existing account with other ids must be renumbered by hand (usermod -u, groupmod -g, "
        "then chown its files)",
        fleet_judge=fleet.same_oneadmin_ids,
        applies_to=BOTH,
    ),
    Control(
        id="FLEET-003",
        title="machine type runs on every cluster host",
        severity=Severity.HIGH,
        rationale="hosts accept live migrations from each other (libvirt -l): a VM keeps the "
        "machine type it was started with (libvirt makes q35 concrete: pc-q35-10.0 on QEMU "
        "10.0), and a host runs only the machine types of its own QEMU",
        detection="per host, the emulator OpenNebula starts (/usr/bin/qemu-kvm-one, else "
        "qemu-system-<arch>) and its machine types with what each alias gives: libvirt's cache "
        "of that emulator's capabilities while libvirt trusts it, else `<emulator> -machine "
        "help` (no VM is started). Hosts are grouped by one_frontend_cluster (default: one "
        "cluster). What VMs get on each host (OS MACHINE when the front-end's value is known, "
        "else the emulator's default) must run on every other host of the cluster: the hosts "
        "that lack it and the hosts whose VMs cannot leave FAIL, naming the newest machine "
        "type every host runs. oned reads vmm_exec_kvm.conf at start only: when it changed "
        "after oned started, or oned is not running (ONE-011), the file's OS MACHINE is not "
        "what VMs get and a host that would pass on it FAILs. The VMs already running keep "
        "the machine type they started with: the status XML libvirt keeps per running domain "
        "(/run/libvirt/qemu/<name>.xml, read by the same probe call, without connecting to "
        "libvirt) gives each its machine type; a VM (one-<id>: OpenNebula's VM id) whose type "
        "another host of the cluster lacks WARNs on its host and on those hosts (a FAIL names "
        "it), and the direction is at risk",
        remediation="kvmprep apply with the front-end role sets OS MACHINE in "
        "vmm_exec_kvm.conf to the newest machine type every host of the cluster runs "
        "(one_frontend_vmm_machine: auto, the default) or to one_frontend_vmm_machine; oned "
        "uses it once OpenNebula is restarted (systemctl restart opennebula). A running VM "
        "keeps its machine type until it is powered off and started again (onevm poweroff, "
        "then onevm resume; a template with its own OS MACHINE: onevm updateconf first), or "
        "until the hosts that lack the type get a newer QEMU",
        fleet_judge=fleet.machine_type,
    ),
    Control(
        id="FLEET-004",
        title="CPU model usable on every cluster host",
        severity=Severity.MEDIUM,
        rationale="hosts accept live migrations from each other (libvirt -l): a VM keeps its "
        "CPU; with host-passthrough (or host-model) it only moves between identical CPUs, "
        "with a named model only to hosts where that model is usable",
        detection="the first CPU of /proc/cpuinfo (vendor, model name, family, model, "
        "stepping) and the named CPU models KVM can run from libvirt's capabilities cache, "
        "per one_frontend_cluster. CPU_MODEL host-passthrough, host-model or unknown: a host "
        "whose CPU differs from another's WARNs, naming the newest model every host runs; a "
        "named CPU_MODEL that libvirt finds unusable on a host FAILs there",
        remediation="kvmprep apply with the front-end role sets CPU_MODEL = [ MODEL = ... ] in "
        "vmm_exec_kvm.conf when one_frontend_vmm_cpu_model is set (auto: the newest model "
        "every host of the cluster runs); VMs that need host-passthrough belong in a cluster "
        "of identical hosts",
        fleet_judge=fleet.cpu_model,
    ),
    Control(
        id="FLEET-005",
        title="QEMU and libvirt versions in the cluster",
        severity=Severity.INFO,
        rationale="information for planning upgrades: hosts of a cluster that drift apart in "
        "QEMU and libvirt versions are what breaks migration (FLEET-003)",
        detection="the QEMU version (libvirt's cache, else `<emulator> --version`) and the "
        "libvirt daemon version of every host, per one_frontend_cluster; informational: always "
        "PASS, the cluster's spread in the message",
        remediation="nothing to change; upgrade the hosts of a cluster together to keep the "
        "spread small",
        fleet_judge=fleet.versions,
    ),
    Control(
        id="NET-001",
        title="OpenNebula names resolve both ways, not to loopback",
        severity=Severity.HIGH,
        rationale="the front-end monitors and deploys to a host, and the hosts of a cluster "
        "migrate to each other, by the name OpenNebula knows the host by; the hosts reach the "
        "front-end by its name",
        detection="each machine's one probe call resolves the others' names (getaddrinfo, each "
        "name in its own thread, 2 s at most for all) and reports its own non-loopback "
        "addresses (`ip -o addr`). A host's name (one_frontend_host_name, else the inventory "
        "name) must resolve on the front-end and on every other host of its "
        "one_frontend_cluster, and the front-end's name on every host, to an address of that "
        "machine: no answer, a loopback address or only others' addresses FAIL, naming the "
        "machine, the name, what it resolved to and the machine's addresses; some of its "
        "addresses and some others' WARN. Hosts of separate clusters need not resolve each "
        "other; without a frontend group only the hosts of each cluster are compared",
        remediation="DNS records for every machine, or the same /etc/hosts entries on every "
        "machine: kvmprep apply with one_frontend_manage_etc_hosts: true (and a frontend "
        "group) writes a block of every machine's address and names into /etc/hosts on the "
        "front-end and every host",
        fleet_judge=names.resolution,
        applies_to=BOTH,
    ),
    Control(
        id="ONE-009",
        title="sudo runs the drivers' commands without a password",
        severity=Severity.HIGH,
        rationale="the drivers run their network and storage commands with `sudo -n`; a rule "
        "naming a path where the command is not makes sudo ask for a password and the driver "
        "fail (ipset moved: OpenNebula one#5909; the /usr merge: one#6090)",
        detection="the Cmnd_Alias lines and user specifications of /etc/sudoers.d/opennebula* "
        "and /etc/sudoers.d/kvmprep-oneadmin (continuations joined): each command path exists; "
        "one "
        "that does not while a program of its name is in /usr/sbin, /usr/bin, /sbin or /bin "
        "FAILs (moved), one installed nowhere FAILs unless it is a tool of a driver the host "
        "may not use (Open vSwitch, LVM, Ceph, LXC, iSCSI, iptables/ipset...: named in the "
        "message); and `sudo -n -l` run as oneadmin (runuser, 5 s) succeeds. Not root: ERROR",
        remediation="name the path the command is at (or install it) in the rules file; "
        "kvmprep apply rewrites /etc/sudoers.d/kvmprep-oneadmin, the node package's file comes "
        "back with a reinstall of opennebula-node-kvm",
        judge=drivers.sudo_rules,
    ),
    Control(
        id="ONE-010",
        title="kvmrc's migration protocol, monitord's probes, front-end remotes",
        severity=Severity.HIGH,
        rationale="the KVM driver migrates to $QEMU_PROTOCOL://<host>/system (kvmrc): "
        "qemu+tcp/qemu+tls need the destination's libvirt listener, authenticated, and with "
        "qemu+ssh (OpenNebula's default) an open listener is attack surface for nothing; "
        "monitord sends hosts OFFLINE when PROBES_PERIOD lacks a key its version expects "
        "(one#7659: EXEC_VM since 7.2); a file in the front-end's remotes oneadmin does not "
        "own makes `onehost sync` fail (one#5906)",
        detection="on each host, QEMU_PROTOCOL of the host's copy of kvmrc "
        "(<kvm_host_remotes_dir>/etc/vmm/kvm/kvmrc) and of the front-end's (unset: qemu+ssh): "
        "qemu+tcp needs a non-loopback socket on 16509 and auth_tcp other than none, qemu+tls "
        "one on 16514 (FAIL otherwise); qemu+ssh with a socket on either WARNs. On the "
        "front-end, monitord.conf's PROBES_PERIOD has every key of the installed version's "
        "default (5.12 to 7.0: BEACON_HOST, SYSTEM_HOST, MONITOR_HOST, STATE_VM, MONITOR_VM, "
        "SYNC_STATE_VM; 7.2 and later also EXEC_VM) and every path of its remotes dir is "
        "oneadmin's (FAIL naming the first ones)",
        remediation="kvmprep apply with the front-end role sets QEMU_PROTOCOL from "
        "kvm_host_migration_transport (one_frontend_migration_protocol: auto) and opens or "
        "closes the listener; add the missing keys to PROBES_PERIOD (onecfg upgrade) and "
        "restart OpenNebula; chown -R oneadmin: the remotes dir and `onehost sync --force`",
        fleet_judge=drivers.driver_settings,
        applies_to=BOTH,
    ),
    Control(
        id="FLEET-006",
        title="cgroup version identical in a cluster",
        severity=Severity.HIGH,
        rationale='live migration between a cgroup v1 and a cgroup v2 host fails ("cpu.weight: '
        "Numerical result out of range\"; OpenNebula's platform notes)",
        detection="per host, /proc/mounts: cgroup2 on /sys/fs/cgroup is v2 (unified), a tmpfs "
        "with cgroup controllers below v1 (legacy, or hybrid with the unified tree too); per "
        "one_frontend_cluster, every host of a cluster with both versions FAILs, naming the "
        "others",
        remediation="boot the hosts of a cluster with the same layout "
        "(systemd.unified_cgroup_hierarchy=1 for v2, the default of current distributions), or "
        "split the layouts into separate OpenNebula clusters",
        fleet_judge=system.cgroup_version,
    ),
    Control(
        id="FLEET-007",
        title="kernel and CPU microcode identical in a cluster",
        severity=Severity.MEDIUM,
        rationale="hosts of a cluster on different kernels or microcode revisions break or "
        "slow live migration (OpenNebula's cluster guide; Proxmox's pve8to9 checks it)",
        detection="per host, the kernel release (uname -r) and the microcode revision of the "
        "first CPU of /proc/cpuinfo (unknown in most VMs: not compared); per "
        "one_frontend_cluster, the hosts whose value differs from the one most hosts have WARN "
        "naming the others (on a tie every differing host WARNs)",
        remediation="upgrade the odd hosts' kernel and microcode (intel-microcode, "
        "amd64-microcode, firmware) to the others' and reboot them, migrating their VMs away "
        "first",
        fleet_judge=system.kernel_microcode,
    ),
    Control(
        id="SYS-001",
        title="clock synchronised",
        severity=Severity.MEDIUM,
        rationale="unsynchronised clocks break TLS and SASL between hosts and make migrated "
        "VMs' clocks jump (OpenNebula's cluster guide; pve8to9 and kolla-ansible check it)",
        detection="`timedatectl show -p NTPSynchronized --value` where systemd runs, else "
        "`chronyc tracking` (leap status), `ntpq -pn` (a '*' peer), else the kernel's "
        "adjtimex(2) STA_UNSYNC flag; not synchronised or unknown WARNs with what was asked "
        "(in a container the clock is the machine's that runs it)",
        remediation="run a time daemon (systemd-timesyncd, chrony or ntpd) that reaches an NTP "
        "server; in a container, on the machine that runs it",
        judge=system.clock,
    ),
    Control(
        id="NET-002",
        title="migration ports reachable between the hosts of a cluster",
        severity=Severity.HIGH,
        rationale="a live migration connects from the source host to the destination's "
        "libvirt listener (16509 tcp, 16514 tls) and QEMU's migration ports (49152-49215, "
        "qemu.conf migration_port_min/max): a firewall dropping them between hosts fails the "
        "migration (OpenNebula's KVM node installation and open cloud networking guides list "
        "the ports; libvirt's migration docs)",
        detection="live, from each host's one probe call: a TCP connect to every other host of "
        "its one_frontend_cluster at the name OpenNebula knows it by, on the listener's port "
        "(per kvm_host_migration_transport; none for ssh) and on migration_port_min (49152), "
        "each peer in its own thread, 1 s per port, 3 s for all; skipped above 32 peers. Open "
        "or refused (the peer's kernel answered) pass; a timeout (filtered) or an unreachable "
        "network FAIL on both hosts' rows, naming the pair and the port. A listener's port "
        "refused FAILs too when the peer's own probe shows its listener on that port on a "
        "non-loopback address (rejected on the way, or bound to another address); otherwise "
        "it is noted: LV-005 judges the listener on the peer. A REJECT on QEMU's port answers "
        "as a closed port does and cannot be told apart. A connect that went to a loopback "
        "address (the peer's name resolves to the host itself) is not a pass: ERROR, NET-001 "
        "judges the name",
        remediation="open the listener's port and 49152-49215 between the hosts of the "
        "cluster in the host firewalls (nft, iptables, firewalld) and the network's",
        fleet_judge=peers.reachability,
    ),
    Control(
        id="ONE-008",
        title="oneadmin's SSH hops work, as the drivers make them",
        severity=Severity.HIGH,
        rationale="the drivers run ssh as oneadmin in BatchMode front-end -> host (deploy, "
        "monitor), host -> host (migration, transfer) and host -> front-end (images): "
        '"Host key verification failed" or a missing key stops them (OpenNebula one#2235, '
        "one#5365; one#7737: the documented by-hand validation fails where the keys live in "
        "the front-end's SSH agent); ONE-006 judges the keys without connecting",
        detection="live: each host's probe runs `ssh -o BatchMode=yes -o ConnectTimeout=3 -o "
        "StrictHostKeyChecking=yes <peer> true` as oneadmin (runuser; minimal environment, no "
        "agent, no connection sharing, known_hosts never written) to every other host of its "
        "one_frontend_cluster and to the front-end, and the front-end's probe to every host, "
        "four at a time, 6 s each and 12 s for all. Each failing hop FAILs as 'host -> "
        "peer: <ssh's last line>' on the rows of both machines (without a frontend group, "
        "where kvmprep exchanges no keys and ONE-006 SKIPs, they WARN); no ssh client FAILs; "
        "not root: ERROR. A hop "
        "is made without an agent: where only the front-end's agent holds oneadmin's key "
        "(OpenNebula's ssh-agent service, forwarded to the hosts), a host's own hops fail "
        "here although the drivers' forwarded ones work",
        remediation="kvmprep apply with the frontend group exchanges oneadmin's keys and the "
        "host keys among all machines (ONE-006 names the missing ones); otherwise add the "
        "source's oneadmin key to the target's ~oneadmin/.ssh/authorized_keys and the "
        "target's host key, under the name used, to the source's ~oneadmin/.ssh/known_hosts",
        fleet_judge=peers.ssh_hops,
        applies_to=BOTH,
        sees_frontend=True,
    ),
)


#: Evaluated only on request (``only_with``): they boot and migrate a domain for real.
SMOKE: tuple[Control, ...] = (
    Control(
        id="SMOKE-001",
        title="a KVM domain boots as oneadmin",
        severity=Severity.CRITICAL,
        rationale="The remote hosts must have the libvirt daemon running; oneadmin runs "
        "KVM VMs through it (qemu:///system) from disks in the datastores",
        detection="as oneadmin: qemu-img creates a 16 MiB qcow2 in "
        "<oneadmin home>/datastores/kvmprep-smoke/, `virsh -c qemu:///system create` starts a "
        "transient 64 MiB KVM domain kvmprep-smoke-<run id> from it (cache=none, no OS, no "
        "graphics) until domstate is running, then destroys it; the times of the three steps "
        "are reported. Everything is removed afterwards (also after a failure or Ctrl-C); a "
        "cleanup that fails is a FAIL",
        remediation="the step and virsh's error say what is missing: run `kvmprep apply` "
        "(libvirt and QEMU installed and running, qemu.conf user/group oneadmin, "
        "dynamic_ownership = 0, oneadmin in kvm, /dev/kvm usable, the AppArmor datastore rule), "
        "then the static controls named in the error",
        judge=smoke.boot,
        only_with="--smoke",
    ),
    Control(
        id="SMOKE-002",
        title="live migration there and back",
        severity=Severity.HIGH,
        rationale="OpenNebula uses libvirt's migration capabilities: hosts accept live "
        "migrations from each other over the configured transport",
        detection="between the first two hosts the static check reached (inventory order, "
        "--limit applies): the same empty disk on both, the domain started on the first as "
        "oneadmin, `virsh migrate --live --unsafe` (no shared storage, as OpenNebula's kvmrc "
        "for such datastores) to qemu+tcp://, qemu+tls:// or qemu+ssh://oneadmin@ the other "
        "per kvm_host_migration_transport, then back; both times are reported; the other "
        "hosts SKIP",
        remediation="the direction and virsh's error say which side refused: run `kvmprep "
        "apply` on both hosts (listener and its port, SASL credentials in oneadmin's "
        "~/.config/libvirt/auth.conf, or TLS certificates, or oneadmin's SSH keys); then "
        "LV-005 and the listener controls; hosts must resolve each other by the inventory name",
        judge=smoke.migration,
        only_with="--migrate",
    ),
)


def for_role(role: Role, controls: tuple[Control, ...] = CATALOG) -> tuple[Control, ...]:
    """The controls reported for a KVM host, or for the front-end."""
    return tuple(c for c in controls if role in c.applies_to)


def by_id(control_id: str) -> Control:
    return next(c for c in (*CATALOG, *SMOKE) if c.id == control_id)


def smoke_controls(*, migrate: bool) -> tuple[Control, ...]:
    """The SMOKE controls of ``check --smoke`` (SMOKE-001) and ``--migrate`` (also SMOKE-002)."""
    return SMOKE if migrate else SMOKE[:1]
