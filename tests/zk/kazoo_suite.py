"""kazoo (Debian's python3-kazoo) against Scopekeeper's ZooKeeper listeners.

    python3 kazoo_suite.py main HOSTS   CRUD, transactions, watches, ACLs, recipes
    python3 kazoo_suite.py hold HOSTS   holds an ephemeral while its first node is killed
    python3 kazoo_suite.py tls TLS_HOSTS PLAIN_HOSTS CERTS
                                        x509 identity on the TLS listener (client-test's cert)

Prints one line per check; exits non-zero on the first failure.
"""
import sys
import threading
import time

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError, InvalidACLError, NoAuthError, NoNodeError, NodeExistsError, NotEmptyError,
)
from kazoo.protocol.states import EventType
from kazoo.security import make_acl, make_digest_acl

WAIT = 20


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name} {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


def client(hosts):
    zk = KazooClient(hosts=hosts, timeout=10)
    zk.start(timeout=30)
    return zk


def main(hosts):
    zk = client(hosts)
    other = client(hosts)

    zk.ensure_path("/recipes/crud")
    path = zk.create("/recipes/crud/item-", b"v0", sequence=True)
    check("sequential create", path == "/recipes/crud/item-0000000000", path)
    data, stat = other.get(path)
    check("get", data == b"v0" and stat.version == 0)
    zk.set(path, b"v1", version=0)
    try:
        zk.set(path, b"v2", version=0)
        check("bad version refused", False)
    except BadVersionError:
        check("bad version refused", True)
    try:
        zk.create(path, b"")
        check("node exists refused", False)
    except NodeExistsError:
        check("node exists refused", True)
    try:
        zk.delete("/recipes/crud")
        check("not empty refused", False)
    except NotEmptyError:
        check("not empty refused", True)
    try:
        zk.get("/recipes/nope")
        check("no node", False)
    except NoNodeError:
        check("no node", True)
    check("children", other.get_children("/recipes/crud") == ["item-0000000000"])

    t = zk.transaction()
    t.create("/recipes/t1", b"")
    t.check("/recipes/crud", 0)
    t.set_data(path, b"v2", version=1)
    results = t.commit()
    check("transaction", results[:2] == ["/recipes/t1", True] and results[2].version == 2,
          repr(results))
    check("transaction applied", zk.get(path)[0] == b"v2")
    t = zk.transaction()
    t.create("/recipes/t2", b"")
    t.check("/recipes/crud", 9)
    results = t.commit()
    check("failed transaction reported per op",
          type(results[0]).__name__ == "RolledBackError"
          and isinstance(results[1], BadVersionError), repr(results))
    check("failed transaction rolled back", zk.exists("/recipes/t2") is None)

    fired = threading.Event()
    events = []

    def on_data(event):
        events.append(event)
        fired.set()

    zk.get(path, watch=on_data)
    other.set(path, b"v3")
    check("data watch fires", fired.wait(WAIT) and events[0].type == EventType.CHANGED)
    fired.clear()
    zk.exists("/recipes/later", watch=on_data)
    other.create("/recipes/later", b"")
    check("exists watch fires", fired.wait(WAIT) and events[1].type == EventType.CREATED)
    fired.clear()
    zk.get_children("/recipes/crud", watch=on_data)
    other.create("/recipes/crud/kid", b"")
    check("child watch fires", fired.wait(WAIT) and events[2].type == EventType.CHILD)
    changes = []
    zk.DataWatch("/recipes/crud/kid", lambda data, stat: changes.append(data))
    other.set("/recipes/crud/kid", b"k1")
    deadline = time.time() + WAIT
    while b"k1" not in changes and time.time() < deadline:
        time.sleep(0.05)
    check("DataWatch sees every value", b"k1" in changes, repr(changes))

    eph = zk.create("/recipes/eph", b"", ephemeral=True)
    check("ephemeral owner", zk.exists(eph).ephemeralOwner == zk.client_id[0])

    lock = zk.Lock("/recipes/lock", "first")
    second = other.Lock("/recipes/lock", "second")
    with lock:
        check("lock excludes", not second.acquire(blocking=False))
    check("lock released", second.acquire(timeout=WAIT))
    second.release()

    counter = zk.Counter("/recipes/counter")
    counter += 5
    other_counter = other.Counter("/recipes/counter")
    other_counter -= 2
    check("counter", counter.value == 3, counter.value)

    queue = zk.Queue("/recipes/queue")
    for item in (b"a", b"b", b"c"):
        queue.put(item)
    got = [other.Queue("/recipes/queue").get() for _ in range(3)]
    check("queue is FIFO", got == [b"a", b"b", b"c"], repr(got))

    barrier = zk.Barrier("/recipes/barrier")
    barrier.create()
    lifted = threading.Event()
    threading.Thread(target=lambda: (other.Barrier("/recipes/barrier").wait(WAIT) and lifted.set()),
                     daemon=True).start()
    time.sleep(0.5)
    check("barrier holds", not lifted.is_set())
    barrier.remove()
    check("barrier lifts", lifted.wait(WAIT))

    party = zk.Party("/recipes/party", "alice")
    party.join()
    other_party = other.Party("/recipes/party", "bob")
    other_party.join()
    check("party", sorted(party) == ["alice", "bob"], repr(list(party)))
    other_party.leave()
    check("party after leave", list(party) == ["alice"], repr(list(party)))

    elected = threading.Event()
    step_down = threading.Event()
    election = zk.Election("/recipes/election", "alice")

    def lead():
        elected.set()
        step_down.wait(WAIT)

    threading.Thread(target=lambda: election.run(lead), daemon=True).start()
    check("election", elected.wait(WAIT))
    contenders = other.Election("/recipes/election").contenders()
    check("election contenders", contenders == ["alice"], repr(contenders))
    step_down.set()

    # ACLs: kazoo computes the digest itself; the server must agree with it.
    zk.add_auth("digest", "alice:pw")
    private = [make_digest_acl("alice", "pw", all=True)]
    zk.create("/recipes/private", b"p", acl=private)
    try:
        other.get("/recipes/private")
        check("acl keeps others out", False)
    except NoAuthError:
        check("acl keeps others out", True)
    acls, stat = zk.get_acls("/recipes/private")
    check("acl reads back", list(acls) == private and stat.aversion == 0, repr(acls))
    shared = private + [make_acl("world", "anyone", read=True)]
    zk.set_acls("/recipes/private", shared, version=0)
    check("acl opened for reading", other.get("/recipes/private")[0] == b"p")
    try:
        other.set("/recipes/private", b"x")
        check("others still cannot write", False)
    except NoAuthError:
        check("others still cannot write", True)
    try:
        other.create("/recipes/bad-acl", b"", acl=[make_acl("auth", "", all=True)])
        check("auth scheme without auth refused", False)
    except InvalidACLError:
        check("auth scheme without auth refused", True)

    # A chroot is the client's business: paths below it, events named relative to it.
    rooted = client(hosts + "/recipes")
    rooted.create("/in-chroot", b"c")
    check("chroot create", zk.get("/recipes/in-chroot")[0] == b"c")
    fired.clear()
    seen = []
    rooted.get("/in-chroot", watch=lambda e: (seen.append(e), fired.set()))
    zk.set("/recipes/in-chroot", b"d")
    check("chroot watch", fired.wait(WAIT) and seen[0].path == "/in-chroot", repr(seen))
    rooted.stop()
    rooted.close()

    zk.stop()
    zk.close()
    check("ephemeral gone with its session", other.exists(eph) is None)
    other.stop()
    other.close()


def hold(hosts):
    # In the given order: the first host is the one the test kills.
    zk = KazooClient(hosts=hosts, timeout=8, randomize_hosts=False)
    zk.start(timeout=30)
    states = []
    zk.add_listener(states.append)
    node = zk.create("/recipes/held", b"", ephemeral=True)
    # Authentication belongs to the connection: kazoo sends it again after reconnecting.
    zk.add_auth("digest", "holder:pw")
    zk.create("/recipes/held-private", b"h", acl=[make_digest_acl("holder", "pw", all=True)])
    session = zk.client_id[0]
    print("holding", node, flush=True)
    # The test kills the node we are connected to now.
    deadline = time.time() + 30
    while KazooState.SUSPENDED not in states and time.time() < deadline:
        time.sleep(0.05)
    check("connection lost", KazooState.SUSPENDED in states, repr(states))
    while states[-1] != KazooState.CONNECTED and time.time() < deadline:
        time.sleep(0.05)
    check("reconnected without losing the session",
          states[-1] == KazooState.CONNECTED and KazooState.LOST not in states, repr(states))
    # Right after a kill the scopes may still be electing, and a node without a live leader
    # answers nothing (ConnectionLoss, as a ZooKeeper follower without one): kazoo's retry is
    # how its users ride that out. A lost session is not retried.
    stat = zk.retry(zk.exists, node)
    check("ephemeral kept", stat is not None and stat.ephemeralOwner == session)
    check("authentication renewed on the new node",
          zk.retry(zk.get, "/recipes/held-private")[0] == b"h")
    zk.stop()
    zk.close()


def tls(tls_hosts, plain_hosts, certs):
    secure = KazooClient(hosts=tls_hosts, timeout=10, use_ssl=True, ca=f"{certs}/ca.pem",
                         certfile=f"{certs}/client-test.pem",
                         keyfile=f"{certs}/client-test.key")
    secure.start(timeout=30)
    plain = client(plain_hosts)
    # The certificate is the identity: x509:test, the same as the native client's.
    mine = [make_acl("x509", "test", all=True)]
    secure.create("/tls-only", b"t", acl=mine)
    check("x509 identity reads its node", secure.get("/tls-only")[0] == b"t")
    try:
        plain.get("/tls-only")
        check("plain client kept out", False)
    except NoAuthError:
        check("plain client kept out", True)
    # The auth scheme picks up the certificate identity.
    secure.create("/tls-auth", b"", acl=[make_acl("auth", "", all=True)])
    acls, _ = secure.get_acls("/tls-auth")
    check("auth scheme becomes x509", [(a.id.scheme, a.id.id) for a in acls] == [("x509", "test")],
          repr(acls))
    # A client without a certificate does not get past the handshake.
    bare = KazooClient(hosts=tls_hosts, timeout=5, use_ssl=True, ca=f"{certs}/ca.pem",
                       connection_retry={"max_tries": 1})
    try:
        bare.start(timeout=5)
        check("client without certificate refused", False)
    except Exception:
        check("client without certificate refused", True)
    finally:
        bare.stop()
    secure.stop()
    plain.stop()


if __name__ == "__main__":
    {"main": main, "hold": hold, "tls": tls}[sys.argv[1]](*sys.argv[2:])
