package compat

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// A KCL-style lease table: conditional writes are what keep two workers from
// holding one lease.
func TestDynamoDBLeaseTable(t *testing.T) {
	t.Parallel()
	c := dynamoClient(t, shared)
	table := uniqueName("go-leases")
	_, err := c.CreateTable(ctx(t), &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("leaseKey"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("leaseKey"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.DeleteTable(ctx(t), &dynamodb.DeleteTableInput{TableName: aws.String(table)}) })
	w := dynamodb.NewTableExistsWaiter(c)
	if err := w.Wait(ctx(t), &dynamodb.DescribeTableInput{TableName: aws.String(table)}, 30*time.Second); err != nil {
		t.Fatalf("TableExists waiter: %v", err)
	}

	lease := map[string]types.AttributeValue{
		"leaseKey":     &types.AttributeValueMemberS{Value: "shardId-000000000000"},
		"leaseOwner":   &types.AttributeValueMemberS{Value: "worker-a"},
		"leaseCounter": &types.AttributeValueMemberN{Value: "1"},
		"checkpoint":   &types.AttributeValueMemberS{Value: "TRIM_HORIZON"},
	}
	if _, err := c.PutItem(ctx(t), &dynamodb.PutItemInput{
		TableName: aws.String(table), Item: lease, ConditionExpression: aws.String("attribute_not_exists(leaseKey)"),
	}); err != nil {
		t.Fatal(err)
	}
	_, err = c.PutItem(ctx(t), &dynamodb.PutItemInput{
		TableName: aws.String(table), Item: lease, ConditionExpression: aws.String("attribute_not_exists(leaseKey)"),
	})
	var failed *types.ConditionalCheckFailedException
	if !errors.As(err, &failed) {
		t.Fatalf("second conditional PutItem: %T %v", err, err)
	}

	up, err := c.UpdateItem(ctx(t), &dynamodb.UpdateItemInput{
		TableName:           aws.String(table),
		Key:                 map[string]types.AttributeValue{"leaseKey": lease["leaseKey"]},
		UpdateExpression:    aws.String("SET leaseCounter = leaseCounter + :one, leaseOwner = :b"),
		ConditionExpression: aws.String("leaseCounter = :c"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":one": &types.AttributeValueMemberN{Value: "1"},
			":c":   &types.AttributeValueMemberN{Value: "1"},
			":b":   &types.AttributeValueMemberS{Value: "worker-b"},
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := up.Attributes["leaseCounter"].(*types.AttributeValueMemberN); !ok || n.Value != "2" {
		t.Fatalf("leaseCounter after the update: %#v", up.Attributes["leaseCounter"])
	}

	got, err := c.GetItem(ctx(t), &dynamodb.GetItemInput{
		TableName: aws.String(table), Key: map[string]types.AttributeValue{"leaseKey": lease["leaseKey"]}, ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := got.Item["leaseOwner"].(*types.AttributeValueMemberS); !ok || o.Value != "worker-b" {
		t.Fatalf("leaseOwner %#v", got.Item["leaseOwner"])
	}

	for _, k := range []string{"shardId-000000000001", "shardId-000000000002"} {
		if _, err := c.PutItem(ctx(t), &dynamodb.PutItemInput{TableName: aws.String(table), Item: map[string]types.AttributeValue{
			"leaseKey": &types.AttributeValueMemberS{Value: k},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	scan := dynamodb.NewScanPaginator(c, &dynamodb.ScanInput{TableName: aws.String(table), Limit: aws.Int32(1)})
	items := 0
	for pages := 0; scan.HasMorePages(); pages++ {
		page, err := scan.NextPage(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		items += len(page.Items)
		if pages > 10 {
			t.Fatal("Scan paginator does not end")
		}
	}
	if items != 3 {
		t.Fatalf("Scan paginator found %d items", items)
	}

	tables := dynamodb.NewListTablesPaginator(c, &dynamodb.ListTablesInput{Limit: aws.Int32(1)})
	found := false
	for pages := 0; tables.HasMorePages() && pages < 1000; pages++ {
		page, err := tables.NextPage(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range page.TableNames {
			found = found || n == table
		}
	}
	if !found {
		t.Fatal("ListTables paginator does not list the table")
	}

	_, err = c.DescribeTable(ctx(t), &dynamodb.DescribeTableInput{TableName: aws.String(uniqueName("no-table"))})
	var notFound *types.ResourceNotFoundException
	if !errors.As(err, &notFound) {
		t.Fatalf("DescribeTable of a missing table: %T %v", err, err)
	}
}
