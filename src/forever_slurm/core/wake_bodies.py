"""Where the wake proxy's request bodies wait (core/wake.py): in memory while small, else in a private
file of the spool directory, within caps on each and on all; the proxy's thread alone uses them."""

import os
import tempfile

from ..common import fsutil

BODY_IN_MEMORY = 64 * 1024      # a larger body goes to the spool directory
MEMORY_BUDGET = 16 * 1024 * 1024


class Refuse(Exception):
    """A client we answer ourselves now: status, why, and Retry-After seconds (None: no such header)."""

    def __init__(self, status, why, retry=None):
        Exception.__init__(self, why)
        self.status = status
        self.retry = retry


class Body:
    """One request body as it arrives: in memory while small, else in a private file of the spool."""

    def __init__(self):
        self.size = 0
        self.memory = bytearray()
        self.in_memory = 0          # bytes of the memory budget it holds
        self.on_disk = 0            # bytes of the spool budget it holds
        self.path = None
        self.fd = None

    def add(self, data):
        """OSError when the spool file cannot take it (a full disk)."""
        if self.path is None:
            self.memory += data
        else:
            _write_all(self.fd, data)
        self.size += len(data)

    def finish(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def reader(self, chunk):
        """The body's bytes, `chunk` at a time."""
        if self.path is None:
            for start in range(0, len(self.memory), chunk):
                yield bytes(self.memory[start:start + chunk])
            return
        with open(self.path, "rb") as handle:
            while True:
                data = handle.read(chunk)
                if not data:
                    return
                yield data

    def discard(self, spool):
        self.finish()
        spool.give_back(self)
        self.memory = bytearray()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None


class Spool:
    """What request bodies may take: memory (BODY_IN_MEMORY each, MEMORY_BUDGET in all) and the spool
    directory (`max_spooled` bytes in all); `max_body` for one. Used by the proxy's thread only."""

    def __init__(self, directory, max_body, max_spooled, retry_after):
        self.directory = directory
        self.retry_after = retry_after
        self.made = None            # the directory once made private and emptied of earlier files
        self.max_body = max_body
        self.max_spooled = max_spooled
        self.in_memory = 0
        self.on_disk = 0

    def reserve(self, body, size):
        """Room for `size` bytes of body (its whole size so far, or announced); _Refuse when over a cap."""
        if size > self.max_body:
            raise Refuse(413, "request body over %d bytes" % self.max_body)
        if body.path is None:
            extra = size - body.in_memory
            if size <= BODY_IN_MEMORY and self.in_memory + extra <= MEMORY_BUDGET:
                self.in_memory += extra
                body.in_memory = size
                return
            self._to_disk(body, size)
        elif size > body.on_disk:
            self._room_on_disk(size - body.on_disk)
            self.on_disk += size - body.on_disk
            body.on_disk = size

    def _room_on_disk(self, extra):
        if self.on_disk + extra > self.max_spooled:
            raise Refuse(503, "%d MiB of request bodies are waiting already" % (self.on_disk // (1024 * 1024)),
                          self.retry_after)

    def _to_disk(self, body, size):
        self._room_on_disk(size)
        try:
            body.fd, body.path = tempfile.mkstemp(prefix="body-", dir=self._directory())
            _write_all(body.fd, body.memory)
        except OSError as exc:
            raise Refuse(503, "cannot keep the request body: %s" % (exc.strerror or exc), self.retry_after)
        body.memory = bytearray()
        self.in_memory -= body.in_memory
        body.in_memory = 0
        self.on_disk += size
        body.on_disk = size

    def give_back(self, body):
        self.in_memory -= body.in_memory
        self.on_disk -= body.on_disk
        body.in_memory = body.on_disk = 0

    def _directory(self):
        if self.made is None:
            if self.directory is None:
                self.made = tempfile.mkdtemp(prefix="forever-slurm-wake-")
            else:
                self.made = fsutil.make_private_dir(self.directory)
                self._remove_files()        # a killed loop's bodies: nobody waits for them now
        return self.made

    def _remove_files(self):
        try:
            names = os.listdir(self.made)
        except OSError:
            return
        for name in names:
            if name.startswith("body-"):
                try:
                    os.unlink(os.path.join(self.made, name))
                except OSError:
                    pass

    def clear(self):
        """At shutdown: no body file left; a directory we made ourselves is removed."""
        if self.made is None:
            return
        self._remove_files()
        if self.directory is None:
            try:
                os.rmdir(self.made)
            except OSError:
                pass
        self.made = None


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
