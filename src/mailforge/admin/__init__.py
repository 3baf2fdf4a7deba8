"""The web administration console: a service of its own ([admin]), served by workers that
the supervisor forks like the protocol workers (worker.py), over HTTPS with aiohttp and
server-rendered Jinja2 pages (web.py, pages.py) and a JSON API (api.py), both doing their
work through operations.py, which calls what the command line calls."""
