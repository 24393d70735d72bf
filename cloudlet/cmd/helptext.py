"""What ``--help`` says beyond the flags: examples and exit statuses, per command.

One table keyed by the command's name (``fake`` and ``lb-agent`` included), so
a command's help is edited in one place and a test can check every command
has its text. :class:`Formatter` appends each flag's default to its help
(argparse's ``ArgumentDefaultsHelpFormatter`` would print ``(default: None)``
and ``(default: False)`` for flags that have no default worth reading) and
keeps the epilog's line breaks.
"""

from __future__ import annotations

import argparse

#: The exit statuses every command shares (DESIGN.md's CLI contract).
STATUS_ERROR = "  1    an error, a refusal or a usage error (one line on stderr)"
STATUS_SIGNALS = "  130  interrupted by SIGINT (Ctrl-C); 143 stopped by SIGTERM"

ROOT = """\
Commands take a FILE of cloudlets (YAML) or the NAME of a stored cloudlet.
The store is the embedded one under --state-dir, or etcd with --etcd.

environment:
  CLOUDLET_STATE_DIR     the embedded store's directory (as --state-dir)
  CLOUDLET_ETCD          etcd endpoints (as --etcd)
  CLOUDLET_LOCK_TIMEOUT  seconds to wait for another run of the same cloudlet (60)

exit status:
  0    success
  1    an error, a refusal or a usage error
  2    plan only: changes are pending
  130  interrupted by SIGINT; 143 stopped by SIGTERM

Run 'cloudlet COMMAND --help' for a command's flags and examples;
'cloudlet completion bash|zsh' for shell completion; 'cloudlet schema' for
the JSON Schema of the YAML."""

#: command -> (examples, exit statuses): the lines under each heading.
EPILOGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "validate": (
        ("cloudlet validate examples/openstack.yaml", "cloudlet validate site/*.yaml"),
        (
            "  0    every file is valid",
            "  1    a file is not (each problem printed with its file, line and column)",
        ),
    ),
    "plan": (
        ("cloudlet plan site.yaml", "cloudlet plan site.yaml --json > plan.json"),
        ("  0    nothing to change", "  2    changes are pending", STATUS_ERROR),
    ),
    "sync": (
        (
            "cloudlet sync site.yaml          # shows the plan and asks on a terminal",
            "cloudlet sync site.yaml --yes --parallelism 4",
        ),
        (
            "  0    converged",
            "  1    not converged, cancelled at the prompt, or an error",
            STATUS_SIGNALS,
        ),
    ),
    "status": (
        ("cloudlet status edge-1", "cloudlet status edge-1 --json"),
        ("  0    status shown (drift included)", STATUS_ERROR + "; an unknown cloudlet"),
    ),
    "destroy": (
        ("cloudlet destroy edge-1", "cloudlet destroy edge-1 --yes   # no terminal to ask on"),
        (
            "  0    everything the cloudlet owned is gone, its desired state forgotten",
            "  1    not all of it could be deleted, not confirmed, or an error",
            STATUS_SIGNALS,
        ),
    ),
    "graph": (
        (
            "cloudlet graph site.yaml -o plan.svg   # needs Graphviz's dot",
            "cloudlet graph site.yaml > plan.dot",
            "cloudlet graph sites.yaml --cloudlet edge-2 -o edge-2.svg   # a file of several",
        ),
        (
            "  0    graph written; or nothing to change, so nothing drawn (said on stderr)",
            STATUS_ERROR + "; several cloudlets in FILE, no --cloudlet",
        ),
    ),
    "apply": (
        ("cloudlet apply site.yaml   # the daemon (cloudlet reconcile) applies it",),
        ("  0    desired state stored", STATUS_ERROR),
    ),
    "get": (
        ("cloudlet get edge-1 > edge-1.yaml",),
        ("  0    printed", STATUS_ERROR + "; an unknown cloudlet"),
    ),
    "history": (
        ("cloudlet history edge-1", "cloudlet history edge-1 --brief"),
        ("  0    printed", STATUS_ERROR + "; a cloudlet with no history"),
    ),
    "rollback": (
        ("cloudlet rollback edge-1 --to 3   # stores revision 3 again; it does not sync",),
        ("  0    the old revision is the desired state again", STATUS_ERROR),
    ),
    "export": (
        (
            "cloudlet export heat site.yaml -o stack.yaml",
            "cloudlet export gateway site.yaml -o /etc/nginx/cloudlet-gateway.conf",
            "cloudlet export onboard --index https://pypi.site/simple --version 0.2.0 \\\n"
            "    --etcd 10.0.0.11:2379 --tls-ca /etc/cloudlet/tls/ca.pem -o user-data.yaml",
            "cloudlet export heat site.yaml --platform-vm debian-12,m1.small,mgmt \\\n"
            "    --index https://pypi.site/simple --etcd 10.0.0.11:2379 -o stack.yaml",
        ),
        (
            "  0    template, configuration or user data written",
            STATUS_ERROR + "; a cloudlet on vsphere or local (Heat is OpenStack's);"
            " gateway: no cloudlet with a platform.gateway",
        ),
    ),
    "reconcile": (
        (
            "cloudlet reconcile --metrics-port 9464",
            "cloudlet --etcd 127.0.0.1:2379 reconcile --replica-id edge-a --workers 8",
        ),
        (
            "  0    stopped cleanly",
            "  1    the daemon failed (the store went away), or an error",
            STATUS_SIGNALS + " (in-flight steps finish first)",
        ),
    ),
    "list": (
        ("cloudlet list", "cloudlet list --json"),
        ("  0    listed (an empty store too)", STATUS_ERROR),
    ),
    "fake": (
        (
            "cloudlet fake ls edge-1",
            "cloudlet fake rm edge-1 vm/web-0            # drift: a VM gone",
            "cloudlet fake set edge-1 vm/web-0 flavor=m1.large",
        ),
        (
            "  0    done (ls: a stored cloudlet not synced yet lists nothing)",
            STATUS_ERROR + "; ls of a cloudlet neither simulated nor stored",
        ),
    ),
    "lb-agent": (
        ("cloudlet lb-agent --source openstack --runtime-dir /run/cloudlet-lb",),
        ("  0    stopped by SIGTERM or SIGINT (its daemons stopped too)", STATUS_ERROR),
    ),
    "relay": (
        (
            "cloudlet relay --listen 127.0.0.1:8443 --tls-cert relay.pem --tls-key relay.key "
            "--site-ca site-ca.pem",
        ),
        (
            "  0    stopped by SIGTERM or SIGINT",
            STATUS_ERROR + "; no --site-ca (nor --insecure-unauthenticated-sites); the port in use",
        ),
    ),
    "relay-agent": (
        (
            "cloudlet relay-agent --relay relay.example:8443 --tls-ca ca.pem "
            "--tls-cert site.pem --tls-key site.key",
        ),
        (
            "  0    stopped by SIGTERM or SIGINT (a lost relay is dialled again, never an exit)",
            STATUS_ERROR,
        ),
    ),
    "token": (
        (
            "cloudlet token issue edge-1 game --ttl 300   # printed once; the store keeps a hash",
            "cloudlet token issue edge-1 game --sessions 3   # opens three sessions, not one",
        ),
        ("  0    issued", STATUS_ERROR + "; an unknown cloudlet, or VM of its spec"),
    ),
    "shell": (
        (
            "cloudlet shell edge-1 game --relay relay.example:8443 --token $T --tls-ca ca.pem",
            "cloudlet shell edge-1 game --relay R --token $T -- ip addr   # one command",
        ),
        (
            "  0    the remote shell or command exited 0 (else its status)",
            STATUS_ERROR + "; the token refused (wrong, expired, another VM's, used)",
        ),
    ),
    "logs": (
        ("cloudlet logs edge-1 game -f --relay relay.example:8443 --token $T --tls-ca ca.pem",),
        (
            "  0    the log was printed (-f: until interrupted)",
            STATUS_ERROR + "; the token refused",
        ),
    ),
    "completion": (
        (
            "cloudlet completion bash > /etc/bash_completion.d/cloudlet",
            "cloudlet completion zsh > ~/.zfunc/_cloudlet   # a folder in $fpath",
            "source <(cloudlet completion bash)             # this shell only",
        ),
        ("  0    script printed", STATUS_ERROR),
    ),
    "schema": (
        (
            "cloudlet schema > cloudlet.schema.json   # for an editor's YAML plugin",
            "cloudlet schema --markdown > docs/reference.md",
        ),
        ("  0    printed", STATUS_ERROR),
    ),
}


def epilog(command: str) -> str | None:
    """The examples and exit statuses of ``command``, or None if it has none."""
    if command not in EPILOGS:
        return None
    examples, statuses = EPILOGS[command]
    lines = ["examples:", *(f"  {e}" for e in examples), "", "exit status:", *statuses]
    return "\n".join(lines)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows every flag's default (when it has one) and keeps the
    epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, argparse.SUPPRESS) and default != []
        if shown and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text
