"""DKIM signing cost per message, as the delivery engine pays it at each attempt.

    .venv/bin/python -m benchmarks.dkim                      # 1000 messages of 10 KiB, RSA-2048 and Ed25519
    .venv/bin/python -m benchmarks.dkim --messages 5000 --size-kib 100

Rows (CPU time of this process, `time.process_time`, per message):

- `rsa-sha256` / `ed25519-sha256`: `servers.delivery.signing.signed` — normalise line ends, parse,
  choose the key by the From: domain, canonicalise (relaxed/relaxed), hash, sign with OpenSSL.
- `dkimpy rsa-sha256 (pure Python RSA)`: `dkim.sign` with the same key and headers, for comparison
  (why we sign through `cryptography`).
- `key lookup per attempt`: `signing_keys_of_server` — one query and one Fernet decryption per key
  (the engine asks once per attempt that has remote recipients).

Every message differs (a counter in Subject and body), so nothing is served from a cache; the key
object itself is parsed once (`load_private_key` remembers it), as in a long-lived worker.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.env import free_port, prepare

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def make_messages(count: int, size_kib: int) -> list[bytes]:
    line = b"The quarterly figures are attached below; please check them before Friday. xx\r\n"  # 80 octets
    body_lines = max(1, size_kib * 1024 // len(line))
    return [
        (
            f"From: Alice Example <alice@lab.test>\r\nTo: Bob <bob@far.test>\r\nCc: carol@far.test\r\n"
            f"Subject: Report {n}\r\nDate: Wed, 02 Dec 2026 15:00:00 +0000\r\n"
            f"Message-ID: <{n}.bench@lab.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        + line * body_lines
        + f"message {n}\r\n".encode()
        for n in range(count)
    ]


def per_message_ms(sign: Callable[[bytes], bytes], messages: list[bytes]) -> float:
    sign(messages[0])  # warm up: imports, the key parse
    started = time.process_time()
    for message in messages:
        sign(message)
    return (time.process_time() - started) / len(messages) * 1000


def dkimpy_sign(pem: bytes, message: bytes) -> bytes:
    import dkim

    headers = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]
    return dkim.sign(message, b"mc1", b"lab.test", pem, canonicalize=(b"relaxed", b"relaxed"), include_headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size-kib", type=int, default=10)
    parser.add_argument("--dkimpy-messages", type=int, default=100, help="dkimpy's pure-Python RSA is slow")
    args = parser.parse_args()
    prepare()

    from servers import dkim_signing, services
    from servers.delivery import signing
    from servers.services.dkim import SigningKey, signing_keys_of_server

    messages = make_messages(args.messages, args.size_kib)
    rows: list[tuple[str, float, int]] = []
    for algorithm in (dkim_signing.RSA, dkim_signing.ED25519):
        pem, _ = dkim_signing.generate_key_pair(algorithm)
        keys = {"lab.test": SigningKey(domain="lab.test", selector="mc1", algorithm=algorithm, private_pem=pem)}
        signed = signing.signed(messages[0], "alice@lab.test", keys)
        assert signed.startswith(b"DKIM-Signature:"), "the benchmark message was not signed"
        rows.append(
            (
                algorithm,
                per_message_ms(lambda m, keys=keys: signing.signed(m, "alice@lab.test", keys), messages),
                len(messages),
            )
        )
        if algorithm == dkim_signing.RSA:
            few = messages[: args.dkimpy_messages]
            dkimpy_ms = per_message_ms(functools.partial(dkimpy_sign, pem.encode()), few)
            rows.append(("dkimpy rsa-sha256 (pure Python RSA)", dkimpy_ms, len(few)))

    server = services.create_virtual_server(
        name="bench-dkim", default_domain="lab.test", ip_address="127.0.0.1", port=free_port(), start=False
    )
    services.generate_dkim_key(server.default_domain)
    lookups = 200
    started = time.process_time()
    for _ in range(lookups):
        signing_keys_of_server(server.pk)
    rows.append(("key lookup per attempt", (time.process_time() - started) / lookups * 1000, lookups))

    print(f"DKIM signing, {args.size_kib} KiB messages, CPU ms per message (relaxed/relaxed)")
    print(f"{'what':<40} {'ms/msg':>8} {'messages':>9}")
    for name, ms, count in rows:
        print(f"{name:<40} {ms:>8.3f} {count:>9}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"dkim-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {
        "size_kib": args.size_kib,
        "rows": [{"what": n, "ms_per_message": ms, "messages": c} for n, ms, c in rows],
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
