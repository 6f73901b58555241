"""The web console: static pages served by the broker, a WAMP client of the meta API.

``settings`` parses ``[console]``; ``http`` answers the console's HTTP requests;
``procedures`` adds the router-specific meta procedures the pages need
(``wamp.broker.*``: node list, paged sessions, message rates). The browser side lives
in ``static/`` (Autobahn|JS vendored under ``static/vendor/``, no build step).
"""

from __future__ import annotations
