"""Paths root opens without following a link that a less privileged account controls.

oneadmin owns its home, the remotes directory and the datastores: anything running as oneadmin
can put a symbolic link (or a hard link) where root is about to write, chown or read, and so make
root write /root/.ssh/authorized_keys, give /etc away or read /etc/shadow. Every path here is
opened one component at a time from /, each relative to the directory before it and with
O_NOFOLLOW: a link is followed only when the account that could have planted it is root (the link
and its directory owned by root, the directory writable by nobody else: /var/run -> /run, /lib ->
usr/lib), and refused otherwise. Files are replaced by a rename in the directory held open (which
replaces a planted link instead of writing through it); owner and mode are set on an open file
descriptor, never by path.

Shared by kvm_host_files, one_frontend_ssh, one_frontend_trust and kvm_host_oneadmin. Runs on the
target's python3 (3.6 or later), standard library only; Linux only (O_NOFOLLOW, dir_fd).
"""

import errno
import os
import pwd
import stat

# Like the kernel's limit (MAXSYMLINKS): more trusted links than this on one path is a loop.
MAX_LINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO someone planted must not hang the run (its type is refused after).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(ValueError):
    """A path root refuses to use; the message names the path and says why."""


def owner_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def join(parts):
    return "/" + "/".join(parts)


def _split(path):
    return [part for part in path.split("/") if part and part != "."]


def _trusted_link(link_st, dir_st):
    """Only root could have made or replaced this link."""
    return (
        link_st.st_uid == 0
        and dir_st.st_uid == 0
        and not dir_st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def link_refusal(shown, st):
    return UnsafePath(
        "{0} is a symbolic link (owned by {1}): refusing to follow it as root".format(
            shown, owner_name(st.st_uid)
        )
    )


def _close_all(fds):
    for fd in fds:
        os.close(fd)


def walk(path, missing_ok=False):
    """Open the directory path: (fd, parts, rest).

    parts are the components of the directory opened (the real path, after the trusted links),
    rest the components of path below it that do not exist (only with missing_ok; else a missing
    component raises FileNotFoundError). The caller closes fd.
    """
    if not os.path.isabs(path):
        raise UnsafePath("{0}: the path must be absolute".format(path))
    todo = _split(os.path.normpath(path))
    fd, parts, parents, links, rest = os.open("/", _DIR_FLAGS), [], [], 0, []
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                if parents:
                    os.close(fd)
                    fd = parents.pop()
                    parts.pop()
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not missing_ok or ".." in todo:
                    raise
                rest = [name, *todo]
                break
            shown = join([*parts, name])
            if stat.S_ISLNK(st.st_mode):
                if not _trusted_link(st, os.fstat(fd)):
                    raise link_refusal(shown, st)
                links += 1
                if links > MAX_LINKS:
                    raise UnsafePath("{0}: too many levels of symbolic links".format(path))
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    _close_all([*parents, fd])
                    fd, parts, parents = os.open("/", _DIR_FLAGS), [], []
                todo = _split(target) + todo
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath("{0} is not a directory".format(shown))
            child = open_dir_at(fd, name, shown, st)
            parents.append(fd)
            fd = child
            parts.append(name)
    except BaseException:
        _close_all([*parents, fd])
        raise
    _close_all(parents)
    return fd, parts, rest


def locate(path):
    """(dir_fd, parts, name, st, rest) for the last component of path: the directory holding it,
    opened as walk opens it, with its real parts; the component's name and lstat (None when it does
    not exist); rest: the missing directories above it (then st is None). A trusted link at the
    last component is followed, any other link is left for the caller to refuse."""
    for _attempt in range(MAX_LINKS):
        dir_fd, parts, rest = walk(os.path.dirname(path), missing_ok=True)
        name = os.path.basename(path)
        if rest:
            return dir_fd, parts, name, None, rest
        st = lstat_at(dir_fd, name)
        if st is None or not stat.S_ISLNK(st.st_mode) or not _trusted_link(st, os.fstat(dir_fd)):
            return dir_fd, parts, name, st, []
        target = os.readlink(name, dir_fd=dir_fd)
        os.close(dir_fd)
        path = os.path.normpath(os.path.join(join(parts), target))
    raise UnsafePath("{0}: too many levels of symbolic links".format(path))


def open_dir_at(dir_fd, name, shown, st=None):
    """The directory name in dir_fd, not through a link; st: what an lstat found just before."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath("{0} is not a directory (a link put there?)".format(shown)) from None
        raise
    if st is not None:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise UnsafePath("{0} was replaced while it was being opened".format(shown))
    return fd


def lstat_at(dir_fd, name):
    """lstat of name in dir_fd, None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def check_hardlink(dir_fd, shown, st):
    """A second name of a regular file, in a directory another account may write, may be root's
    file (/etc/shadow) linked there: refused."""
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and os.fstat(dir_fd).st_uid != 0:
        raise UnsafePath(
            "{0} has {1} hard links in a directory not owned by root: refusing to use it as "
            "root".format(shown, st.st_nlink)
        )


def check_owner(shown, st, uid):
    """An existing object that belongs to a third account (neither root nor uid) is not taken."""
    if uid is not None and st.st_uid not in (0, uid):
        raise UnsafePath(
            "{0} is owned by {1}: refusing to take it over".format(shown, owner_name(st.st_uid))
        )


def open_file_at(dir_fd, name, shown):
    """(fd, fstat) of the regular file name in dir_fd, None when it does not exist."""
    st = lstat_at(dir_fd, name)
    if st is None:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise link_refusal(shown, st)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath("{0} is not a regular file".format(shown))
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath("{0} was replaced by a symbolic link".format(shown)) from None
        raise
    fst = os.fstat(fd)
    try:
        if not stat.S_ISREG(fst.st_mode):
            raise UnsafePath("{0} is not a regular file".format(shown))
        check_hardlink(dir_fd, shown, fst)
    except UnsafePath:
        os.close(fd)
        raise
    return fd, fst


def read_fd(fd, limit=None):
    chunks, size = [], 0
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            raise UnsafePath("more than {0} bytes".format(limit))


def read_file(path, limit=None, owners=None):
    """(bytes, fstat) of the regular file at path, None when it does not exist; owners: the uids
    allowed to own it (any when None)."""
    try:
        dir_fd, parts, _rest = walk(os.path.dirname(path))
    except FileNotFoundError:
        return None
    shown = join([*parts, os.path.basename(path)])
    try:
        opened = open_file_at(dir_fd, os.path.basename(path), shown)
    finally:
        os.close(dir_fd)
    if opened is None:
        return None
    fd, st = opened
    try:
        if owners is not None and st.st_uid not in owners:
            raise UnsafePath(
                "{0} is owned by {1}, not by {2}".format(
                    shown, owner_name(st.st_uid), " or ".join(owner_name(u) for u in owners)
                )
            )
        if limit is not None and st.st_size > limit:
            raise UnsafePath("{0} is larger than {1} bytes".format(shown, limit)) from None
        try:
            return read_fd(fd, limit), st
        except UnsafePath:
            raise UnsafePath("{0} is larger than {1} bytes".format(shown, limit)) from None
    finally:
        os.close(fd)


def set_attributes(fd, uid, gid, mode):
    """Owner, group (None: unchanged) and mode (None: unchanged) of an open file or directory."""
    if uid is not None or gid is not None:
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    if mode is not None:
        os.fchmod(fd, mode)


def make_dirs(dir_fd, parts, rest, uid, gid, mode):
    """Create the missing components rest under the directory dir_fd (at parts), each with the
    given owner, group and mode: (fd of the last, its parts). dir_fd is closed."""
    fd = dir_fd
    try:
        for name in rest:
            shown = join([*parts, name])
            try:
                # 0700 until the owner and mode are set: nobody else gets in meanwhile.
                os.mkdir(name, 0o700 if mode is not None else 0o777, dir_fd=fd)
            except FileExistsError:
                raise UnsafePath("{0} appeared while it was being created".format(shown)) from None
            child = open_dir_at(fd, name, shown)
            os.close(fd)
            fd = child
            parts = [*parts, name]
            set_attributes(fd, uid, gid, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, parts


def write_new(dir_fd, name, data, mode=0o600):
    """Create the file name in dir_fd (never through a link, never an existing one); its fd."""
    fd = os.open(name, _NEW_FLAGS, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=dir_fd)
        raise
    return fd


def temp_name(prefix):
    return "{0}{1}-{2}".format(prefix, os.getpid(), os.urandom(6).hex())


def replace_file(dir_fd, name, data, uid, gid, mode, before=None):
    """Write data to a new file beside name, with its owner and mode, then rename it over name
    (a link at name is replaced, not followed). before(temp_name) runs just before the rename
    (a validation); an exception there leaves name untouched."""
    tmp = temp_name(".kvmprep-")
    fd = write_new(dir_fd, tmp, data)
    try:
        try:
            set_attributes(fd, uid, gid, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if before is not None:
            before(tmp)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if lstat_at(dir_fd, tmp) is not None:
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def copy_as_backup(dir_fd, name, data, st, stamp):
    """A copy of data under name.PID.STAMP~ (Ansible's backup naming), with st's owner, mode and
    times; the backup's name."""
    backup = "{0}.{1}.{2}~".format(name, os.getpid(), stamp)
    fd = write_new(dir_fd, backup, data)
    try:
        set_attributes(fd, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)
    return backup


def replace_link(dir_fd, name, src):
    """Point name in dir_fd to src with a rename (an existing link is replaced atomically)."""
    tmp = temp_name(".kvmprep-link-")
    os.symlink(src, tmp, dir_fd=dir_fd)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.unlink(tmp, dir_fd=dir_fd)
        raise


def _chown_entry(dir_fd, name, shown, uid, gid, top_dev, check):
    """Give one entry of a tree to uid:gid; the fd of a directory to descend into, else None.
    Returns (changed, fd or None, skipped)."""
    st = lstat_at(dir_fd, name)
    if st is None:
        return False, None, False
    differs = (st.st_uid, st.st_gid) != (uid, gid)
    if stat.S_ISLNK(st.st_mode):
        if differs and not check:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        return differs, None, False
    if stat.S_ISDIR(st.st_mode):
        if st.st_dev != top_dev:
            return False, None, True  # another file system mounted in the tree: not walked
        fd = open_dir_at(dir_fd, name, shown, st)
        if differs and not check:
            os.fchown(fd, uid, gid)
        return differs, fd, False
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(
            "{0} is not a regular file, directory or link: refusing to give it to {1}".format(
                shown, owner_name(uid)
            )
        )
    fd, fst = open_file_at(dir_fd, name, shown)
    try:
        if fst.st_nlink > 1:
            raise UnsafePath(
                "{0} has {1} hard links: refusing to give it to {2}".format(
                    shown, fst.st_nlink, owner_name(uid)
                )
            )
        if differs and not check:
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    return differs, None, False


def chown_tree(top_fd, parts, uid, gid, check=False):
    """Give everything under the directory top_fd to uid:gid without following a link (a link
    itself gets the owner), without leaving its file system, refusing a hard-linked file or a
    special file. Returns (number of entries changed or to change, directories skipped)."""
    top_dev = os.fstat(top_fd).st_dev
    changed, skipped = 0, []
    # One open directory per level of depth: [fd, parts, names left].
    stack = [[os.dup(top_fd), parts, sorted(os.listdir(top_fd))]]
    try:
        while stack:
            fd, here, names = stack[-1]
            if not names:
                os.close(fd)
                stack.pop()
                continue
            name = names.pop(0)
            shown = join([*here, name])
            differs, child, skip = _chown_entry(fd, name, shown, uid, gid, top_dev, check)
            changed += differs
            if skip:
                skipped.append(shown)
            if child is not None:
                stack.append([child, [*here, name], []])
                stack[-1][2] = sorted(os.listdir(child))
    finally:
        _close_all([level[0] for level in stack])
    return changed, skipped
