"""llmobs-tui: htop for LLM applications. Importing the package loads no Textual."""

import os

# gRPC's C core logs through absl: unless GRPC_VERBOSITY is set, it writes one INFO line to stderr
# per failed TLS handshake ("Handshake failed with error SSL_ERROR_SSL …"), so a port scanner or a
# plaintext client paints over the TUI. grpc reads GRPC_VERBOSITY once, when it is first imported,
# and every entry point (the `llmobs-tui` command) imports this package before grpc. ERROR is what
# grpc documents as its default (errors only); a value the user set is left alone. The HTTP port
# counts its handshake failures instead (receiver.tls); grpc offers no such count.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

__version__ = "0.1.0"
