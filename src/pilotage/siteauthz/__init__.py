"""The site authorization service (``pilotage site-authz``) around the switch's policy engine.

The engine itself is ``pilotage.sitepolicy.policy`` (standard library only), so the switch's
local mode and this service decide exactly alike.
"""
