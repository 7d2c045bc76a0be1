from ferry import service
from services.gateway.bootstrap import main

service.run("gateway", main)
