"""A real DNS server on loopback (UDP, dnspython's wire format) answering from a table of records."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset

Records = dict[tuple[str, str], list[str]]  # (name, type) -> the records' texts as in a zone file


@contextmanager
def running_dns(records: Records) -> Iterator[dns.resolver.Resolver]:
    """A resolver that asks a server on 127.0.0.1 knowing only `records`; other names are NXDOMAIN."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            answer = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            kind = dns.rdatatype.to_text(question.rdtype)
            texts = records.get((name, kind))
            if texts:
                answer.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", kind, texts))
            elif not any(key[0] == name for key in records):
                answer.set_rcode(dns.rcode.NXDOMAIN)
            server.sendto(answer.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.getsockname()[1]
    resolver.lifetime = 2.0
    try:
        yield resolver
    finally:
        stop.set()
        thread.join()
        server.close()
