"""Debian's Postfix on a loopback port with a private configuration, for comparison.

Everything lives under one directory: main.cf/master.cf, the queue, the data directory, the log
and the Maildirs (virtual(8) delivery, owned by `nobody`). Needs root and `apt-get install postfix`.
"""

from __future__ import annotations

import pwd
import shutil
import subprocess
import time
from pathlib import Path

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {root}
maillog_file = {root}/postfix.log
myhostname = mx.postfix-bench.invalid
mydomain = postfix-bench.invalid
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
smtputf8_enable = no
# No reverse-DNS lookup of clients (the load comes from many 127.0.0.x with no PTR and no
# network to ask): MailConsole does none unless a rule needs it.
smtpd_peername_lookup = no
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
message_size_limit = 52428800
virtual_mailbox_limit = 0
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = texthash:{root}/etc/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"""


class Postfix:
    def __init__(self, root: Path, port: int, domain: str, users: list[str]) -> None:
        self.root = root
        self.port = port
        self.domain = domain
        self.users = users
        self.config_dir = root / "etc"

    @property
    def maildirs(self) -> list[Path]:
        return [self.root / "mail" / self.domain / user for user in self.users]

    def _postfix(self, *args: str) -> None:
        done = subprocess.run(["postfix", "-c", str(self.config_dir), *args], capture_output=True, text=True)
        if done.returncode:
            log = self.root / "postfix.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"postfix {' '.join(args)} failed: {done.stderr.strip()}\n{tail}")

    def start(self) -> None:
        if shutil.which("postfix") is None:
            raise RuntimeError("postfix is not installed: apt-get install postfix")
        nobody = pwd.getpwnam("nobody")
        self.root.chmod(0o755)  # Postfix's own users must reach data/, spool/ and mail/
        self.config_dir.mkdir(parents=True)
        (self.root / "data").mkdir()
        (self.root / "spool").mkdir()
        mail = self.root / "mail"
        for maildir in self.maildirs:
            for sub in ("tmp", "new", "cur"):
                (maildir / sub).mkdir(parents=True)
        subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", str(mail)], check=True)
        (self.config_dir / "vmailbox").write_text(
            "".join(f"{user}@{self.domain} {self.domain}/{user}/\n" for user in self.users)
        )
        (self.config_dir / "main.cf").write_text(
            MAIN_CF.format(root=self.root, domain=self.domain, uid=nobody.pw_uid, gid=nobody.pw_gid)
        )
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(port=self.port))
        subprocess.run(["chown", "postfix", str(self.root / "data")], check=True)
        self._postfix("start")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.master_pid():
                return
            time.sleep(0.1)
        raise RuntimeError(f"postfix did not start; see {self.root / 'postfix.log'}")

    def master_pid(self) -> int | None:
        pid_file = self.root / "spool" / "pid" / "master.pid"
        try:
            return int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def stop(self) -> None:
        try:
            self._postfix("stop")
        except RuntimeError as error:
            print(f"warning: {error}")
        shutil.rmtree(self.root, ignore_errors=True)
