"""The pool's web pages and its Prometheus metrics, served by the server itself.

:mod:`~pilotage.web.mount` puts them on the server's application. Who is looking:
:mod:`~pilotage.web.identity` (session cookie, or the API's token and socket), opened by
:mod:`~pilotage.web.signin` (a pasted token, or a one-time link from ``pilotage web``,
stored by :mod:`~pilotage.web.sessions`). What they see: the routes of
:mod:`~pilotage.web.pages`, each reading its filters (:mod:`~pilotage.web.filters`) and
its data (:mod:`~pilotage.web.overview`, :mod:`~pilotage.web.series`,
:mod:`~pilotage.web.jobs_view`, :mod:`~pilotage.web.history`, :mod:`~pilotage.web.sites`,
:mod:`~pilotage.web.users`, :mod:`~pilotage.web.accounting`) and rendering a template
(:mod:`~pilotage.web.render`). ``/metrics``: :mod:`~pilotage.web.metrics` (gauges),
:mod:`~pilotage.web.metrics_feed` (counters), :mod:`~pilotage.web.metrics_http`
(timings). See docs/web.md.
"""
