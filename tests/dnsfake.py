"""A tiny UDP DNS server on loopback that answers in one chosen (mis)way, for resolver tests."""

from __future__ import annotations

import random
import socket
import threading

import dns.exception
import dns.flags
import dns.message
import dns.rrset


class FakeDNS:
    """A UDP DNS server on loopback that answers every query in one chosen (mis)way."""

    def __init__(self, answer=None, garbage: bytes = b"", truncate=False, wrong_type=False,
                 sample: int = 0, port: int = 0):
        self.answer, self.garbage, self.truncate, self.wrong_type = (
            answer, garbage, truncate, wrong_type)
        self.sample = sample  # >0: answer a random `sample` of `answer`, as the pool does
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            self.queries += 1
            if self.garbage:
                self.sock.sendto(data[:2] + self.garbage, peer)
                continue
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue  # a stray datagram that is no query must not end the server's thread
            reply = dns.message.make_response(query)
            qname = query.question[0].name
            if self.truncate:
                reply.flags |= dns.flags.TC
            elif self.wrong_type:
                reply.answer.append(dns.rrset.from_text(qname, 150, "IN", "TXT", '"hi"'))
            elif self.answer is not None:
                chosen = (random.sample(self.answer, min(self.sample, len(self.answer)))
                          if self.sample else self.answer)
                reply.answer.append(dns.rrset.from_text(qname, 150, "IN", "AAAA", *chosen))
            self.sock.sendto(reply.to_wire(), peer)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.sock.close()
