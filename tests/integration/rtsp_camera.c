/*
 * rtsp_camera: an IP camera for the pull tests, built on gst-rtsp-server.
 * Serves live H.264 (videotestsrc, x264enc; 1 s GOP) and optionally PCMA
 * audio at rtsp://127.0.0.1:PORT/cam, over TCP and UDP, optionally behind
 * Basic or Digest authentication. Prints "ready" once it listens and runs
 * until killed. With --tls-cert and --tls-key it speaks RTSPS only. With
 * --redirect URL it answers every DESCRIBE with 302 to URL (and serves
 * nothing itself).
 *
 *   rtsp_camera --port P [--user U --password W [--auth basic|digest]] [--audio]
 *               [--tls-cert PEM --tls-key PEM] [--redirect URL]
 */
#include <gst/gst.h>
#include <gst/rtsp-server/rtsp-server.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    fprintf(stderr, "usage: rtsp_camera --port P [--user U --password W [--auth basic|digest]] "
                    "[--audio] [--tls-cert PEM --tls-key PEM] [--redirect URL]\n");
    exit(2);
}

static const char *redirect_to;

static GstRTSPStatusCode on_pre_describe(GstRTSPClient *client, GstRTSPContext *ctx, gpointer data)
{
    (void)client, (void)ctx, (void)data;
    return GST_RTSP_STS_MOVE_TEMPORARILY;
}

/* The 302 goes out with where to. */
static void on_send_message(GstRTSPClient *client, GstRTSPContext *ctx, GstRTSPMessage *msg,
                            gpointer data)
{
    (void)client, (void)ctx, (void)data;
    GstRTSPStatusCode code;
    if (gst_rtsp_message_get_type(msg) == GST_RTSP_MESSAGE_RESPONSE &&
        gst_rtsp_message_parse_response(msg, &code, NULL, NULL) == GST_RTSP_OK &&
        code == GST_RTSP_STS_MOVE_TEMPORARILY)
        gst_rtsp_message_add_header(msg, GST_RTSP_HDR_LOCATION, redirect_to);
}

static void on_client(GstRTSPServer *server, GstRTSPClient *client, gpointer data)
{
    (void)server, (void)data;
    g_signal_connect(client, "pre-describe-request", G_CALLBACK(on_pre_describe), NULL);
    g_signal_connect(client, "send-message", G_CALLBACK(on_send_message), NULL);
}

int main(int argc, char **argv)
{
    const char *port = NULL, *user = NULL, *password = NULL, *auth_kind = "digest";
    const char *tls_cert = NULL, *tls_key = NULL;
    gboolean audio = FALSE;
    gst_init(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = argv[++i];
        else if (strcmp(argv[i], "--user") == 0 && i + 1 < argc)
            user = argv[++i];
        else if (strcmp(argv[i], "--password") == 0 && i + 1 < argc)
            password = argv[++i];
        else if (strcmp(argv[i], "--auth") == 0 && i + 1 < argc)
            auth_kind = argv[++i];
        else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
            tls_cert = argv[++i];
        else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
            tls_key = argv[++i];
        else if (strcmp(argv[i], "--redirect") == 0 && i + 1 < argc)
            redirect_to = argv[++i];
        else if (strcmp(argv[i], "--audio") == 0)
            audio = TRUE;
        else
            usage();
    }
    if (!port || (user && !password) || !tls_cert != !tls_key ||
        (strcmp(auth_kind, "basic") != 0 && strcmp(auth_kind, "digest") != 0))
        usage();

    GMainLoop *loop = g_main_loop_new(NULL, FALSE);
    GstRTSPServer *server = gst_rtsp_server_new();
    gst_rtsp_server_set_address(server, "127.0.0.1");
    gst_rtsp_server_set_service(server, port);
    if (redirect_to)
        g_signal_connect(server, "client-connected", G_CALLBACK(on_client), NULL);

    GstRTSPMediaFactory *factory = gst_rtsp_media_factory_new();
    char launch[1024];
    snprintf(launch, sizeof(launch),
             "( videotestsrc is-live=true pattern=ball "
             "! video/x-raw,width=320,height=240,framerate=30/1 "
             "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=600 "
             "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=-1 "
             "%s )",
             audio ? "audiotestsrc is-live=true ! audio/x-raw,rate=8000,channels=1 ! alawenc "
                     "! rtppcmapay name=pay1 pt=8"
                   : "");
    gst_rtsp_media_factory_set_launch(factory, launch);
    /* A pipeline per client, as cameras that start each session with a
     * keyframe do: every recording then starts on one. */
    gst_rtsp_media_factory_set_shared(factory, FALSE);
    gst_rtsp_media_factory_set_protocols(factory,
                                         GST_RTSP_LOWER_TRANS_TCP | GST_RTSP_LOWER_TRANS_UDP);

    GstRTSPAuth *auth = user || tls_cert ? gst_rtsp_auth_new() : NULL;
    if (user) {
        gst_rtsp_auth_set_supported_methods(
            auth, strcmp(auth_kind, "basic") == 0 ? GST_RTSP_AUTH_BASIC : GST_RTSP_AUTH_DIGEST);
        GstRTSPToken *token = gst_rtsp_token_new(GST_RTSP_TOKEN_MEDIA_FACTORY_ROLE, G_TYPE_STRING,
                                                 "camera-user", NULL);
        if (strcmp(auth_kind, "basic") == 0) {
            gchar *basic = gst_rtsp_auth_make_basic(user, password);
            gst_rtsp_auth_add_basic(auth, basic, token);
            g_free(basic);
        } else {
            gst_rtsp_auth_add_digest(auth, user, password, token);
        }
        gst_rtsp_token_unref(token);
    } else if (auth) { /* TLS without users: anyone may watch */
        GstRTSPToken *token = gst_rtsp_token_new(GST_RTSP_TOKEN_MEDIA_FACTORY_ROLE, G_TYPE_STRING,
                                                 "camera-user", NULL);
        gst_rtsp_auth_set_default_token(auth, token);
        gst_rtsp_token_unref(token);
    }
    if (tls_cert) {
        GError *error = NULL;
        GTlsCertificate *cert = g_tls_certificate_new_from_files(tls_cert, tls_key, &error);
        if (!cert) {
            fprintf(stderr, "rtsp_camera: %s\n", error->message);
            return 1;
        }
        gst_rtsp_auth_set_tls_certificate(auth, cert);
        g_object_unref(cert);
    }
    if (auth) {
        gst_rtsp_server_set_auth(server, auth);
        g_object_unref(auth);
        gst_rtsp_media_factory_add_role(factory, "camera-user", GST_RTSP_PERM_MEDIA_FACTORY_ACCESS,
                                        G_TYPE_BOOLEAN, TRUE, GST_RTSP_PERM_MEDIA_FACTORY_CONSTRUCT,
                                        G_TYPE_BOOLEAN, TRUE, NULL);
    }
    GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points(server);
    gst_rtsp_mount_points_add_factory(mounts, "/cam", factory);
    g_object_unref(mounts);
    if (gst_rtsp_server_attach(server, NULL) == 0) {
        fprintf(stderr, "rtsp_camera: cannot listen on 127.0.0.1:%s\n", port);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    g_main_loop_run(loop);
    return 0;
}
