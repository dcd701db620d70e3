"""The site's authorization and mapping policy: bans, pilots, mapping rules, pool accounts.

The roles LCAS/LCMAPS, GUMS and Argus play at a grid site. One engine for both places a
site may decide: in the switch itself (``[authz] kind = "local"``) and in the site's
service (``pilotage site-authz``). Standard library only, importing nothing else of
pilotage (a test enforces it), so the switch's installer copies it beside the switch and
a site reviews it alone. Modules: ``policy`` (the rules and their evaluation), ``leases``
(pool accounts leased through a gridmapdir).
"""
