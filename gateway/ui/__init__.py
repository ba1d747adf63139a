"""The saga explorer: web pages at /ui over the saga log (see docs/explorer.md), and the
gateway's offline /docs."""

from gateway.ui.web import CSP, SecurityHeaders, install_ui

__all__ = ["CSP", "SecurityHeaders", "install_ui"]
