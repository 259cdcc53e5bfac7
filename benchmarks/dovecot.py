"""Debian's Dovecot POP3 or IMAP (dovecot-pop3d, dovecot-imapd) on a loopback port, serving
MailConsole's own Maildirs.

A private dovecot.conf, run directory and log; passwords in a passwd-file as SHA512-CRYPT (what
`doveadm pw` makes by default). Mail processes run as `nobody`, so the Maildirs are chowned to it
(MailConsole's POP3 worker runs as root and still reads them). Needs root and `apt-get install
dovecot-pop3d dovecot-imapd`. Dovecot keeps its index files inside the Maildirs and moves read
mail to cur/. For IMAP the limits are raised so 1,000 IDLE sessions of a few users fit (one imap
process per session, Dovecot's default).
"""

from __future__ import annotations

import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

DOVECOT_CONF = """\
protocols = {protocol}
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{mailbox_root}/%d/%n
first_valid_uid = 1
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mailbox_root}/%d/%n
}}
service {protocol}-login {{
  inet_listener {protocol} {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener {protocol}s {{
    port = 0
  }}
}}
{extra}"""

IMAP_EXTRA = """\
default_process_limit = 2000
default_client_limit = 10000
default_vsz_limit = 0
mail_max_userip_connections = 2000
service imap-login {
  service_count = 0
  process_min_avail = 2
  client_limit = 4000
}
"""


class Dovecot:
    def __init__(
        self,
        root: Path,
        port: int,
        mailbox_root: Path,
        credentials: dict[str, str],
        reachable_dirs: list[Path],
        protocol: str = "pop3",
    ) -> None:
        self.protocol = protocol
        self.reachable_dirs = [*reachable_dirs, root]
        self.root = root
        self.port = port
        self.mailbox_root = mailbox_root
        self.credentials = credentials
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if shutil.which("dovecot") is None:
            raise RuntimeError(f"dovecot is not installed: apt-get install dovecot-{self.protocol}d")
        nobody = pwd.getpwnam("nobody")
        self.root.mkdir(parents=True, exist_ok=True)
        # Dovecot's auth process (user dovecot) and mail processes (nobody) must reach their files.
        for directory in self.reachable_dirs:
            directory.chmod(0o755)
        lines = []
        for address, password in self.credentials.items():
            hashed = subprocess.run(
                ["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password], check=True, capture_output=True, text=True
            ).stdout.strip()
            lines.append(f"{address}:{hashed}\n")
        (self.root / "passwd").write_text("".join(lines))
        (self.root / "passwd").chmod(0o644)  # benchmark-only credentials
        self.own_mail()
        conf = self.root / "dovecot.conf"
        conf.write_text(
            DOVECOT_CONF.format(
                protocol=self.protocol,
                extra=IMAP_EXTRA if self.protocol == "imap" else "",
                root=self.root,
                mailbox_root=self.mailbox_root,
                port=self.port,
                uid=nobody.pw_uid,
                gid=nobody.pw_gid,
            )
        )
        self.process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited; see {self.root / 'dovecot.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start listening")

    def own_mail(self) -> None:
        """Give the Maildirs to Dovecot's mail user again: files another server stored meanwhile (as
        root, mode 0600) would otherwise end a Dovecot session that meets them."""
        nobody = pwd.getpwnam("nobody")
        subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", str(self.mailbox_root)], check=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
