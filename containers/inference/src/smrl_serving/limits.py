"""The model server's limits against abusive or broken clients (standard library only).

Why these values: clients of a local endpoint send a request (at most 6 MB) in
milliseconds over loopback and keep one connection per thread. The limits leave those
untouched and end what no well-behaved client does.

* HEADER_TIMEOUT_S: a request's headers must be complete within 10 s of its first byte,
  else a 408 and the connection closed (before: held 200 s and more);
* BODY_TIMEOUT_S: its body within 10 s of the end of its headers, else the connection is
  closed; 10 s leaves room for a loaded machine and a client paused in a debugger;
* KEEP_ALIVE_S: an idle connection (kept alive after a response, or new and silent) is
  closed after 60 s; a minute covers a notebook's pauses between calls without holding
  abandoned connections for long;
* CONNECTION_LIMIT: connections (idle ones included) per worker before new requests get a
  503 at once: nginx's default worker_connections; each costs a file handle and some
  kilobytes, so 1,024 bounds a worker's memory while leaving room;
* BACKLOG: connections the kernel queues before a worker accepts them (uvicorn's default).
"""

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 60
CONNECTION_LIMIT = 1024
BACKLOG = 2048
