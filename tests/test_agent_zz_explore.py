import pytest, traceback
from exchange import channel, contract
from exchange.redis_client import command_redis
from workers.agent import Agent
from .factories import create_application, register_environment
pytestmark = pytest.mark.django_db(transaction=True)

@pytest.mark.parametrize("form", ["badid", "created_at", "timeout", "status", "data", "enqueued_at", "origin"])
def test_x(form, r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    a = Agent("env_a", "http://a", "", 60)
    a.register()
    c = command_redis()
    if form == "badid":
        c.rpush("rq:queue:appsup.env_a", "bad.id")
    else:
        jid = channel.enqueue("env_a", contract.PING, "crm")
        value = {"created_at": "yesterday", "timeout": "forever", "status": "weird", "data": "xx", "enqueued_at": "nope", "origin": ""}[form]
        c.hset(f"rq:job:{jid}", form, value)
    try:
        a.process_one(timeout=1)
        print("NO ERROR", form)
    except Exception as e:
        traceback.print_exc()
    print(c.keys("*"))
    print(c.lrange("rq:queue:appsup.env_a:intermediate", 0, -1))
