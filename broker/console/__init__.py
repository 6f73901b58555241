"""The web console: static pages served by the broker, a WAMP client of the meta API.

``settings`` parses ``[console]``; ``http`` answers the console's HTTP requests;
``procedures`` adds the router-specific meta procedures the pages need
(``wamp.broker.*``: node list, paged sessions, message rates). The browser side lives
in ``static/`` (Autobahn|JS 22.11.1 vendored under ``static/vendor/``: no Node.js or network at install
time; see ``static/vendor/VENDORED.md``).
"""

from __future__ import annotations
