#!/usr/bin/env python3
"""A real SMTP server on loopback for the notification tests (aiosmtpd).

Every accepted message is written to OUTDIR/NNNN.eml (its headers, then its body decoded) (written to a temporary name, then renamed,
so a reader never sees half a message), preceded by one `X-Envelope-To: ADDR` line per
recipient. Recipients in the domain `refused.example` are refused with 550, so a test can watch
the registry retry and give up. With --cert/--key the server offers STARTTLS and requires it
before MAIL FROM. Prints `listening on PORT` once it accepts connections.
"""
import argparse
import asyncio
import email
import email.policy
import itertools
import os
import ssl

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, outdir):
        self.outdir = outdir
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().endswith("@refused.example"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        final = os.path.join(self.outdir, f"{n:04d}.eml")
        tmp = final + ".tmp"
        with open(tmp, "wb") as f:
            for rcpt in envelope.rcpt_tos:
                f.write(f"X-Envelope-To: {rcpt}\r\n".encode())
            f.write(f"X-Envelope-TLS: {'yes' if session.ssl else 'no'}\r\n".encode())
            raw = envelope.original_content or envelope.content
            message = email.message_from_bytes(raw, policy=email.policy.default)
            # The headers as sent, then the body decoded from its transfer encoding
            # (quoted-printable wraps long lines), so a test reads what a person reads.
            f.write(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
            f.write(message.get_content().encode())
        os.rename(tmp, final)
        return "250 Message accepted"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    handler = Sink(args.outdir)

    def factory():
        return SMTP(
            handler,
            hostname="smtp-sink.test",
            tls_context=tls,
            require_starttls=tls is not None,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
