from ceemsnet.runtime.kprobes import parse_kprobe_profile

PROFILE = """\
  ceemsnet_r_tcp_recvmsg_bcc_4242                        1200              17
  ceemsnet_r_udp_recvmsg_bcc_4242                           3               0
  p_do_sys_open_bcc_99                                     10               0
"""


def test_parse_kprobe_profile():
    prof = parse_kprobe_profile(PROFILE)
    assert prof["ceemsnet_r_tcp_recvmsg_bcc_4242"] == (1200, 17)
    assert prof["ceemsnet_r_udp_recvmsg_bcc_4242"] == (3, 0)
    assert len(prof) == 3
    assert parse_kprobe_profile("") == {}
