"""The controller core: lifecycle, speakers and health, broadcasts, routing, events, commands."""
