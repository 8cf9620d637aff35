from tests.ocpp_client import RawStation, now_iso


async def test_boot_heartbeat_status(csms):
    st = await RawStation.connect(csms.ws_url, "CS-1")
    boot = await st.boot()
    assert boot["status"] == "Accepted" and boot["interval"] == 300
    hb = await st.result("Heartbeat", {})
    assert hb["currentTime"].endswith("Z")
    assert await st.result("StatusNotification", {"timestamp": now_iso(), "connectorStatus": "Available",
                                                  "evseId": 1, "connectorId": 1}) == {}
    rec = await csms.daemon.store.get_station("CS-1")
    assert rec.vendor == "TestVendor" and rec.registration == "Accepted" and rec.connected
    assert (await csms.daemon.store.list_connectors("CS-1"))[0]["status"] == "Available"
    await st.close()
