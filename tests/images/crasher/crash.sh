echo "crasher: starting up"
echo "crasher: loading model /models/none.gguf"
sleep 1
echo "crasher: error: failed to load model" >&2
echo "crasher: exiting with code 3" >&2
exit 3
