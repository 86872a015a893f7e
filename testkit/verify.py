#!/usr/bin/env python3
"""Verify the topmost DKIM-Signature of a message with dkimpy (an independent verifier).

Used through mailfarm-testkit (testkit/src/dkimpy.rs). The public key record comes either from a file (no DNS
at all) or from a DNS server given as --dns HOST:PORT (queried with dnspython, a dkimpy
dependency).

    verify.py MESSAGE_FILE --txt-file RECORD_FILE [--expect-name SEL._domainkey.DOMAIN]
    verify.py MESSAGE_FILE --txt 'v=DKIM1; k=ed25519; p=...' [--expect-name ...]
    verify.py MESSAGE_FILE --dns 127.0.0.1:5353

Exit status: 0 signature verifies, 1 it does not, 2 usage or environment error (dkimpy,
pynacl or dnspython missing, unreadable file). The verdict and dkimpy's log go to stderr.
"""

import argparse
import logging
import sys

try:
    import dkim
    import dns.message
    import dns.query
    import dns.rdatatype
    import nacl.signing  # noqa: F401  (dkimpy needs it for ed25519-sha256)
except ImportError as err:  # pragma: no cover - environment problem
    print(
        f"verify.py: missing Python module ({err}); install with: pip install dkimpy pynacl",
        file=sys.stderr,
    )
    sys.exit(2)


def normalise(name):
    """Lower-case DNS name without the trailing dot."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.rstrip(".").lower()


def file_dnsfunc(record, expect_name):
    """A dkimpy dnsfunc that answers every TXT query (or only expect_name) with `record`."""

    def lookup(name, timeout=5):
        if expect_name is not None and normalise(name) != normalise(expect_name):
            print(f"verify.py: unexpected key lookup {name!r}, expected {expect_name!r}", file=sys.stderr)
            return None
        return record

    return lookup


def dns_dnsfunc(server):
    """A dkimpy dnsfunc that asks the DNS server HOST:PORT (UDP, TCP on truncation)."""
    host, _, port = server.rpartition(":")
    host = host.strip("[]")
    port = int(port)

    def lookup(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        response, _ = dns.query.udp_with_fallback(query, host, port=port, timeout=timeout)
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(list(rrset.items)[0].strings)
        return None

    return lookup


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("message", help="file holding the complete signed message")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--txt-file", help="file holding the DKIM key TXT record content")
    source.add_argument("--txt", help="the DKIM key TXT record content itself")
    source.add_argument("--dns", metavar="HOST:PORT", help="DNS server to ask for the key record")
    parser.add_argument("--expect-name", help="with --txt/--txt-file: answer only this name")
    args = parser.parse_args()

    try:
        with open(args.message, "rb") as f:
            message = f.read()
        if args.txt_file is not None:
            with open(args.txt_file, "rb") as f:
                record = f.read().strip()
            dnsfunc = file_dnsfunc(record, args.expect_name)
        elif args.txt is not None:
            dnsfunc = file_dnsfunc(args.txt.encode("ascii"), args.expect_name)
        else:
            dnsfunc = dns_dnsfunc(args.dns)
    except (OSError, ValueError) as err:
        print(f"verify.py: {err}", file=sys.stderr)
        return 2

    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG, format="dkimpy: %(message)s")
    ok = dkim.verify(message, logger=logging.getLogger("dkimpy"), dnsfunc=dnsfunc)
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
